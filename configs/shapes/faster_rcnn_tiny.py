# A tiny Faster R-CNN on shapes data: what `make demo` and the end-to-end tests launch.
#   python tools/data/make_shapes.py --out data/shapes
#   tools/dist_train.sh configs/shapes/faster_rcnn_tiny.py 2
_base_ = [
    '../_base_/models/faster_rcnn_r18_fpn_tiny.py',
    '../_base_/datasets/shapes_detection.py',
    '../_base_/schedules/tiny_iters.py',
    '../_base_/mmdet_runtime.py',
]
from ovkit.shapes import SHAPE_CLASSES

model = dict(roi_head=dict(bbox_head=dict(num_classes=len(SHAPE_CLASSES))))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(interval=20, by_epoch=False, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=5, by_epoch=False)
randomness = dict(seed=0)
