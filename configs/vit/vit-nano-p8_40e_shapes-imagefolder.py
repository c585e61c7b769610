# The image-folder config (vit-base-p16_augreg-ft-10e_imagefolder.py) on the shapes ImageFolder:
# 8 classes read from the folder, 32 px, a nano ViT from scratch (96 wide, 4 blocks, 3 heads,
# 4-pixel patches: 64 tokens) that CI trains on 2 CPU processes in a few minutes. Data:
#   python tools/data/make_shapes.py --out data/shapes --kinds imagefolder
_base_ = ['./vit-base-p16_augreg-ft-10e_imagefolder.py']
from ovkit.vit.presets import folder_classes, pretrained_norm  # noqa: E402

data_root = 'data/shapes/imagefolder'
classes = folder_classes(data_root, 'train', required=False)
num_classes = len(classes) if classes else None
img_size = 32

model = dict(
    data_preprocessor=pretrained_norm('scratch'),
    backbone=dict(arch=dict(_delete_=True, embed_dim=96, depth=4, num_heads=3), patch_size=4,
                  img_size=img_size, drop_path_rate=0.0, pretrained=None),
    head=dict(num_classes=num_classes, in_channels=96),
)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=img_size, crop_ratio_range=(0.6, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=img_size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=img_size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, classes=classes, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, classes=classes, pipeline=test_pipeline))
test_dataloader = val_dataloader

max_epochs = 12
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=2,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=2, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
auto_scale_lr = dict(base_batch_size=16)  # 2 processes x 8
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=max_epochs))
randomness = dict(seed=0)
