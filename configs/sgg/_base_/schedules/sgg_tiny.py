# SGB's relation optimiser at CPU scale: SGD, momentum 0.9, weight decay 1e-4 (none on biases),
# gradient-norm clip 5, short linear warm-up, x0.1 for the last quarter; a few hundred
# iterations. lr 0.005 per image (2 processes x 2 images), half SGB's 0.01: with 64-d MLPs the
# union-feature ReLUs all die at SGB's rate in some seeds, which shuts the visual gate.
max_iters = 200
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    paramwise_cfg=dict(bias_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=4)
