# Fine-tune ViT-B/16 on YOUR image folder. The one setting: data_root, a folder holding
#   <data_root>/train/<class name>/<image>.jpg   and   <data_root>/val/<class name>/<image>.jpg
# (edit the line below, or leave it and run with DATA_ROOT=/path/to/folder in the environment).
# The classes are the sorted sub-folders of train/ (as torchvision's ImageFolder); their number
# sizes the head. Weights: timm's vit_base_patch16_224.augreg2_in21k_ft_in1k (local file, see
# `pretrained`); the normalisation and resizing are that checkpoint's own (mean = std = 0.5,
# bicubic, crop 0.9). Train, plot, predict:
#   tools/dist_train.sh configs/vit/vit-base-p16_augreg-ft-10e_imagefolder.py 2
#   python tools/analysis/plot_curves.py work_dirs/vit-base-p16_augreg-ft-10e_imagefolder
#   python tools/predict.py CONFIG work_dirs/.../best_accuracy_top1_epoch_*.pth my_photo.jpg
_base_ = ['../_base_/mmpretrain_runtime.py']
from ovkit.vit.presets import folder_classes, pretrained_norm  # noqa: E402

data_root = '{{$DATA_ROOT:data/my_images}}'

pretrained_tag = 'vit_base_patch16_224.augreg2_in21k_ft_in1k'
# https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k -> model.safetensors
pretrained = f'checkpoints/{pretrained_tag}/model.safetensors'
classes = folder_classes(data_root, 'train', required=False)  # None: folder absent (error later)
num_classes = len(classes) if classes else None
img_size = 224
resize = 248  # img_size / crop_pct 0.9 (timm's eval transform for this checkpoint)
custom_imports = dict(imports=['ovkit.vit'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    data_preprocessor=pretrained_norm(pretrained_tag),
    backbone=dict(type='OVKitViT', arch='base', patch_size=16, img_size=img_size,
                  drop_path_rate=0.1, pretrained=pretrained),
    neck=None,
    head=dict(type='OVKitViTClsHead', num_classes=num_classes, in_channels=768,
              loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1), topk=(1, )),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=resize, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train',
                 classes=classes, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val',
                 classes=classes, pipeline=test_pipeline))
test_dataloader = val_dataloader
# Accuracy plus the validation cross-entropy (OVKitValLoss; mmpretrain logs no val loss).
val_evaluator = [dict(type='Accuracy', topk=(1, )), dict(type='OVKitValLoss')]
test_evaluator = val_evaluator

max_epochs = 10
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
    clip_grad=dict(max_norm=1.0),
    paramwise_cfg=dict(custom_keys={
        '.cls_token': dict(decay_mult=0.0),
        '.dist_token': dict(decay_mult=0.0),
        '.pos_embed': dict(decay_mult=0.0),
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=max_epochs, eta_min=1e-6,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=max_epochs, val_interval=1)
val_cfg = dict()
test_cfg = dict()
auto_scale_lr = dict(base_batch_size=64)  # 2 processes x 32

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1,
                    save_best='accuracy/top1', rule='greater'))
# `loss_epoch`: the running mean of the training loss over the epoch, which plot_curves reads.
log_processor = dict(custom_cfg=[
    dict(data_src='loss', method_name='mean', window_size='epoch', log_name='loss_epoch')
])
