# BARON's OV-COCO schedule (reference: 16 GPUs x (2 detection + 2 KD images), lr 0.04, 90k
# iterations, AMP, no gradient clipping). With fewer GPUs, --auto-scale-lr scales the lr
# linearly from base_batch_size = 64 images (16 x 4): 8 GPUs -> 0.02, 2 GPUs -> 0.005, for the
# same 90k iterations (so 1/2 or 1/8 of the reference's images).
max_iters = 90000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[60000, 80000], gamma=0.1),
]
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='SGD', lr=0.04, momentum=0.9, weight_decay=2.5e-5))
auto_scale_lr = dict(enable=False, base_batch_size=64)
