# SGB's relation training (README commands + e2e_relation_X_101_32_8_FPN_1x.yaml): SGD with
# lr 0.01 per image x 12 images = 0.12, momentum 0.9, weight decay 1e-4 (none on biases),
# gradient-norm clip 5, linear warm-up from 0.1 over 500 iterations, then x0.1 when val R@100
# has not risen by 0.001 for 2 validations (WarmupReduceLROnPlateau), 50k iterations,
# validation and checkpoint every 2000.
# Not reproduced: SGB also stops after the 3rd decay (MAX_DECAY_STEP); here training runs on.
max_iters = 50000
val_interval = 2000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.12, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(bias_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=500),
    # stepped once per validation (by_epoch=True is mmengine's switch for that)
    dict(type='ReduceOnPlateauLR', monitor='sgg/R@100', rule='greater', factor=0.1,
         patience=2, threshold=0.001, threshold_rule='abs', cooldown=0, by_epoch=True),
]
# lr above is for 12 images per iteration; --auto-scale-lr rescales for other batch sizes
auto_scale_lr = dict(enable=False, base_batch_size=12)
