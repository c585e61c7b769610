# The ablation of configs/baron/shapes.py: the same detector, data and schedule with the bag and
# single-region losses off (no BaronKD, hence no KD batch). What BARON adds on novel classes
# is the difference of the two (`make demo` prints both; docs/baron.md).
#   tools/dist_train.sh configs/baron/baron-nokd_r18-fpn_tiny_shapes.py 2
_base_ = ['./shapes.py']
from ovkit.shapes import SHAPE_CLASSES

data_root = 'data/shapes/coco/'

model = dict(
    data_preprocessor=dict(
        _delete_=True,
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32),
    roi_head=dict(kd=None))

train_dataloader = dict(
    _delete_=True,
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=dict(classes=SHAPE_CLASSES),
        ann_file='annotations/train_base.json',
        data_prefix=dict(img='train/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True),
            dict(type='Resize', scale=(128, 128), keep_ratio=True),
            dict(type='RandomFlip', prob=0.5),
            dict(type='PackDetInputs'),
        ]))
