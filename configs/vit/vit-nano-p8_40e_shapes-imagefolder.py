# The image-folder config (vit-base-p16_augreg-ft-10e_imagefolder.py) on the shapes ImageFolder:
# 8 classes read from the folder (40 training images each, drawn in colours that do not tell the
# class: only the outline does), 32 px, a nano ViT from scratch (96 wide, 4 blocks, 3 heads,
# 8-pixel patches: 16 tokens) that CI trains on 2 CPU processes in about a minute. Data:
#   python tools/data/make_shapes.py --out data/shapes --kinds imagefolder
_base_ = ['./vit-base-p16_augreg-ft-10e_imagefolder.py']
from ovkit.vit.presets import folder_classes, pretrained_norm  # noqa: E402

data_root = 'data/shapes/imagefolder'
classes = folder_classes(data_root, 'train', required=False)
num_classes = len(classes) if classes else None
img_size = 32

model = dict(
    data_preprocessor=pretrained_norm('scratch'),
    backbone=dict(arch=dict(_delete_=True, embed_dim=96, depth=4, num_heads=3), patch_size=8,
                  img_size=img_size, drop_path_rate=0.0, pretrained=None),
    # plain cross-entropy: label smoothing slows a from-scratch fit on 320 images
    head=dict(num_classes=num_classes, in_channels=96,
              loss=dict(_delete_=True, type='CrossEntropyLoss')),
)
# Shifts and flips only: the shapes fill about half of the 64 px images, and cropping areas or
# aspect ratios (RandomResizedCrop) cut or bend outlines that 320 images cannot spare.
view = 40  # resize 64 -> 40, then crop 32 (random for training, centred for testing)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=view, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='RandomCrop', crop_size=img_size),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=view, edge='short', backend='pillow', interpolation='bicubic'),
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

max_epochs = 40
# from scratch on 320 images: no clipping (it would cut these early gradients, norm ~3, to 1)
optim_wrapper = dict(optimizer=dict(lr=1e-3), clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=3,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', by_epoch=True, begin=3, end=max_epochs, eta_min=1e-5,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=5)
auto_scale_lr = dict(base_batch_size=16)  # 2 processes x 8
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
randomness = dict(seed=0)
