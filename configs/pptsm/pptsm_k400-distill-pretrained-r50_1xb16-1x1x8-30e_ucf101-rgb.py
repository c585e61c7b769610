# PP-TSM R50 fine-tuned on UCF101 (split 1) from PaddleVideo's K400 distilled weights: the
# seed's recipe (1 GPU x 16 clips, 30 epochs, warmup 5 from 5e-4 to the cosine at base 1e-3,
# stepped every iteration) on Paddle's own pipeline (uniform 8 segments, Scale 256,
# MultiScaleCrop 256 with 13 offsets, RandomCrop 224, flip; test: centre frame, centre crop).
#   python tools/model_converters/pptsm_paddle.py ppTSM_k400_uniform_distill.pdparams \
#       checkpoints/pptsm_k400_uniform_distill.pth
#   python tools/train.py \
#       configs/pptsm/pptsm_k400-distill-pretrained-r50_1xb16-1x1x8-30e_ucf101-rgb.py
_base_ = ['../_base_/models/pptsm_r50.py', '../_base_/mmaction_runtime.py']

custom_imports = dict(imports=['ovkit.pptsm'], allow_failed_imports=False)

# ---- paths (docs/pptsm.md shows the layout) ----------------------------------------------
# Set the roots in the environment (DATA_ROOT=/data/ucf101 PRETRAINED=/w/x.pth tools/...) or
# here. The paths below are derived when the config is read, so `--cfg-options data_root=...`
# would change nothing; override a single path by its own key instead, e.g.
# train_dataloader.dataset.ann_file=... or model.backbone.pretrained=... (docs/pptsm.md).
data_root = '{{$DATA_ROOT:data/ucf101}}'
video_root = f'{data_root}/videos'  # <Class>/v_<Class>_gXX_cXX.avi
ann_file_train = f'{data_root}/ucf101_train_split_1_videos.txt'  # "path label", '.avi' optional
ann_file_val = f'{data_root}/ucf101_val_split_1_videos.txt'
label_map = f'{data_root}/annotations/classInd.txt'  # class names for tools/video_infer.py
pretrained_checkpoint = '{{$PRETRAINED:checkpoints/pptsm_k400_uniform_distill.pth}}'  # converted
video_suffix = '.avi'

num_classes = 101
num_segments = 8
model = dict(
    backbone=dict(pretrained=pretrained_checkpoint),
    cls_head=dict(num_classes=num_classes),
    data_preprocessor=dict(blending=dict(num_classes=num_classes)))

train_pipeline = [
    dict(type='PyAVOpen'),
    dict(type='PaddleSampleFrames', num_segments=num_segments),
    dict(type='PyAVDecodeSampled'),
    dict(type='PaddleScale', short_size=256),
    dict(type='PaddleMultiScaleCrop', target_size=256, scales=(1, .875, .75, .66)),
    dict(type='PaddleRandomCrop', target_size=224),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
val_pipeline = [
    dict(type='PyAVOpen'),
    dict(type='PaddleSampleFrames', num_segments=num_segments, test_mode=True),
    dict(type='PyAVDecodeSampled'),
    dict(type='PaddleScale', short_size=256),
    dict(type='PaddleCenterCrop', target_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = val_pipeline

train_dataloader = dict(
    batch_size=16, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='PaddleVideoDataset', ann_file=ann_file_train, suffix=video_suffix,
                 data_prefix=dict(video=video_root), pipeline=train_pipeline,
                 num_classes=num_classes))
val_dataloader = dict(
    batch_size=16, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PaddleVideoDataset', ann_file=ann_file_val, suffix=video_suffix,
                 data_prefix=dict(video=video_root), pipeline=val_pipeline, test_mode=True,
                 num_classes=num_classes))
test_dataloader = dict(
    batch_size=1, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='PaddleVideoDataset', ann_file=ann_file_val, suffix=video_suffix,
                 data_prefix=dict(video=video_root), pipeline=test_pipeline, test_mode=True,
                 num_classes=num_classes))
val_evaluator = dict(type='AccMetric')
test_evaluator = val_evaluator

max_epochs = 30
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_begin=1, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# SGD 0.9 Nesterov, wd 1e-4 (0 on BN and fc bias), fc weight lr x5 and bias x10: exactly
# mmaction2's TSMOptimWrapperConstructor(fc_lr5=True). No gradient clipping (as Paddle).
base_lr = 1e-3
optim_wrapper = dict(
    constructor='TSMOptimWrapperConstructor', paramwise_cfg=dict(fc_lr5=True),
    optimizer=dict(type='SGD', lr=base_lr, momentum=0.9, nesterov=True, weight_decay=1e-4))
param_scheduler = [
    dict(type='PaddleWarmupCosineLR', warmup_start_lr=5e-4, warmup_epochs=5,
         max_epochs=max_epochs, by_epoch=True, convert_to_iter_based=True)
]
# Precise BN before validation on 0-based epochs 0, 5, 10, ... and the last: 200 training
# batches (with mixup) per process, statistics averaged over batches and processes.
custom_hooks = [
    dict(type='PaddlePreciseBNHook', num_iters=200, interval=5),
]
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='auto'),
                     logger=dict(interval=20))
auto_scale_lr = dict(enable=False, base_batch_size=16)
