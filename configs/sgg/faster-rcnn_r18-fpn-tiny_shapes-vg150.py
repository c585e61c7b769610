# The tiny Faster R-CNN trained on the shapes scene-graph images: the detector the SGDet (and
# SGCls) shapes configs freeze, as SGB first trains its VG detector
# (configs/e2e_relation_detector_X_101_32_8_FPN_1x.yaml) and then the relation models on it.
#   tools/dist_train.sh configs/sgg/faster-rcnn_r18-fpn-tiny_shapes-vg150.py 2
# then point `detector_checkpoint` of the shapes SGDet config at its last checkpoint.
_base_ = [
    '../_base_/models/faster_rcnn_r18_fpn_tiny.py',
    './_base_/datasets/shapes_vg150.py',
    './_base_/sgg_runtime.py',
]
from ovkit.shapes import SHAPE_CLASSES

model = dict(roi_head=dict(bbox_head=dict(num_classes=len(SHAPE_CLASSES))))
# the scene-graph data set, read as a detection set (relations are carried but unused); at
# test time the boxes are loaded after Resize, in original pixels, as mmdet's metrics expect
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale={{_base_.img_scale}}, keep_ratio=True),
    dict(type='LoadSGGAnnotations'),
    dict(type='PackSGGInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(_delete_=True, type='VOCMetric', metric='mAP', eval_mode='area')
test_evaluator = val_evaluator
custom_hooks = []  # no relation head: no frequency statistics

max_iters = 400
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=1e-4),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=20),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1, save_best=None))
log_processor = dict(window_size=50)
randomness = dict(seed=0)
