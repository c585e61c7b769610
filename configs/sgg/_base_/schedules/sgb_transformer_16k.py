# SGB's Transformer schedule (README, "Transformer Model needs to change SOLVER.BASE_LR to 0.001,
# SOLVER.SCHEDULE.TYPE to WarmupMultiStepLR, SOLVER.MAX_ITER to 16000, SOLVER.IMS_PER_BATCH to
# 16, SOLVER.STEPS to (10000, 16000)"): SGD, lr 0.001 per image x 16 images = 0.016, momentum
# 0.9, weight decay 1e-4 (none on biases), gradient-norm clip 5, linear warm-up from 0.1 over
# 500 iterations, x0.1 at 10k, 16k iterations, validation and checkpoint every 2000.
max_iters = 16000
val_interval = 2000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.016, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(bias_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters, milestones=[10000],
         gamma=0.1),
]
# lr above is for 16 images per iteration (the configs: 8 per process on 2 GPUs);
# --auto-scale-lr rescales for other batch sizes
auto_scale_lr = dict(enable=False, base_batch_size=16)
