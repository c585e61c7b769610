# `make demo`'s tiny Faster R-CNN: configs/shapes/faster_rcnn_tiny.py (whose 40 iterations the
# end-to-end tests use) trained long enough to be a working detector: 200 iterations, about 20 s
# of training on 2 idle CPU processes. bbox mAP50 on the 16 validation images of
# `make_shapes.py --out data/shapes` from tools/test.py: 0.73 (0.06 after 40 iterations; 0.94
# after 300, which `make demo` would not finish in 10 minutes).
#   tools/dist_train.sh configs/shapes/faster_rcnn_tiny_demo.py 2
_base_ = ['./faster_rcnn_tiny.py']

max_iters = 200
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=max_iters))
log_processor = dict(window_size=50)
