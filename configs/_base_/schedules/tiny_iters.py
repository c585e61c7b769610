# Iteration-based schedule for the tiny shapes configs (a few dozen iterations on a CPU).
max_iters = 40
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0, norm_type=2))
# Scaled for 2 processes x 2 images; mmengine rescales when enabled via --auto-scale-lr.
auto_scale_lr = dict(enable=False, base_batch_size=4)
