# Evaluate (or fine-tune) timm's ViT-B/16 augreg2_in21k_ft_in1k weights on ImageNet-1k:
# the test pipeline and normalisation are the checkpoint's own (timm pretrained cfg: mean = std
# = 0.5, bicubic resize to 248 = 224 / crop_pct 0.9, centre crop 224). Top-1 in timm's table:
# 85.108. Convert first (nothing is downloaded):
#   python tools/model_converters/vit.py model.safetensors checkpoints/vit-b16-augreg2.pth
#   python tools/test.py configs/vit/vit-base-p16_augreg-in21k-ft_in1k.py \
#       checkpoints/vit-b16-augreg2.pth
_base_ = './vit-base-p16_64xb64_in1k.py'
from ovkit.vit.presets import pretrained_norm  # noqa: E402

pretrained_tag = 'vit_base_patch16_224.augreg2_in21k_ft_in1k'
model = dict(
    backbone=dict(drop_rate=0.0, pos_drop_rate=0.0, representation_size=None),
    head=dict(in_channels=768))
data_preprocessor = dict(pretrained_norm(pretrained_tag), num_classes=1000)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
