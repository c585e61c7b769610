# A tiny PP-TSM trained on shapes videos whose class is decided by motion alone (CI, demo):
#   python tools/data/make_shapes.py --out data/shapes --kinds video
#   tools/dist_train.sh configs/pptsm/pptsm_tiny-r18_2xb4-1x1x8-24e_shapes-video.py 2
# Same recipe as the full configs (Paddle sampling and crops, mixup, label smoothing,
# warmup + cosine per iteration, precise BN), scaled down: a 1/4-width ResNet18-vd TSM on
# 48x48 videos, 2 processes x 4 clips. Its twin without the temporal shift
# (pptsm_tiny-r18-noshift_...) shows what the shift is worth on motion-only classes.
_base_ = '../_base_/mmaction_runtime.py'
from ovkit.shapes import VIDEO_CLASSES

custom_imports = dict(imports=['ovkit.pptsm'], allow_failed_imports=False)

data_root = 'data/shapes/video'
ann_file_train = f'{data_root}/train_list_nosuffix.txt'  # PaddleVideo style: no '.avi'
ann_file_val = f'{data_root}/val_list.txt'
video_root = f'{data_root}/videos'
class_names = VIDEO_CLASSES
num_classes = len(VIDEO_CLASSES)
num_segments = 8
frame_size = 48  # the shapes videos are 48x48
crop_size = 40

model = dict(
    type='Recognizer2D',
    backbone=dict(type='ResNetTweaksTSM', depth=18, base_channels=16,
                  num_segments=num_segments),
    cls_head=dict(type='TSMHead', num_classes=num_classes, in_channels=128,
                  num_segments=num_segments, dropout_ratio=0.5, init_std=0.01,
                  label_smooth_eps=0.1, average_clips='score'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor', mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], format_shape='NCHW',
        blending=dict(type='MixupBlending', num_classes=num_classes, alpha=0.2)))

train_pipeline = [
    dict(type='PyAVOpen'),
    dict(type='PaddleSampleFrames', num_segments=num_segments),
    dict(type='PyAVDecodeSampled'),
    dict(type='PaddleScale', short_size=frame_size),
    dict(type='PaddleMultiScaleCrop', target_size=frame_size),
    dict(type='PaddleRandomCrop', target_size=crop_size),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
val_pipeline = [
    dict(type='PyAVOpen'),
    dict(type='PaddleSampleFrames', num_segments=num_segments, test_mode=True),
    dict(type='PyAVDecodeSampled'),
    dict(type='PaddleScale', short_size=frame_size),
    dict(type='PaddleCenterCrop', target_size=crop_size),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = val_pipeline

train_dataloader = dict(
    batch_size=4, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='PaddleVideoDataset', ann_file=ann_file_train, suffix='.avi',
                 data_prefix=dict(video=video_root), pipeline=train_pipeline,
                 num_classes=num_classes))
val_dataloader = dict(
    batch_size=8, num_workers=1, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PaddleVideoDataset', ann_file=ann_file_val, suffix='.avi',
                 data_prefix=dict(video=video_root), pipeline=val_pipeline, test_mode=True,
                 num_classes=num_classes))
test_dataloader = val_dataloader
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

max_epochs = 24
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_begin=1,
                 val_interval=6)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

base_lr = 0.01
optim_wrapper = dict(
    constructor='TSMOptimWrapperConstructor', paramwise_cfg=dict(fc_lr5=True),
    optimizer=dict(type='SGD', lr=base_lr, momentum=0.9, nesterov=True, weight_decay=1e-4))
param_scheduler = [
    dict(type='PaddleWarmupCosineLR', warmup_start_lr=base_lr / 2, warmup_epochs=2,
         max_epochs=max_epochs, by_epoch=True, convert_to_iter_based=True)
]
custom_hooks = [
    dict(type='PaddlePreciseBNHook', num_iters=8, interval=6),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=4),
    checkpoint=dict(type='CheckpointHook', interval=6, max_keep_ckpts=2))
log_processor = dict(type='LogProcessor', window_size=4, by_epoch=True)
randomness = dict(seed=0)
