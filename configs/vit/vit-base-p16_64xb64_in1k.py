# ViT-B/16 trained from scratch on ImageNet-1k with mmpretrain's recipe
# (mmpretrain configs/vision_transformer/vit-base-p16_64xb64_in1k.py): 64 GPUs x 64 images,
# AdamW lr 3e-3 wd 0.3 (none on pos_embed/cls/dist tokens), linear warm-up over 30 epochs then
# cosine to 300, grad clip 1.0, Mixup 0.2, label smoothing 0.1, dropout 0.1, a 3072-wide
# representation layer (pre_logits). The model is OVKitViT: its weights carry timm's names.
# Evaluate timm/JAX weights instead: see vit-base-p16_augreg-in21k-ft_in1k.py.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_pil_resize_autoaug.py',
    'mmpretrain::_base_/schedules/imagenet_bs4096_AdamW.py',
    '../_base_/mmpretrain_runtime.py',
]
custom_imports = dict(imports=['ovkit.vit'], allow_failed_imports=False)

data_root = 'data/imagenet'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='OVKitViT',
        arch='base',
        patch_size=16,
        img_size=224,
        drop_rate=0.1,
        pos_drop_rate=0.1,
        representation_size=3072),
    neck=None,
    head=dict(
        type='OVKitViTClsHead',
        num_classes=1000,
        in_channels=3072,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='classy_vision'),
        topk=(1, 5)),
    train_cfg=dict(augments=dict(type='Mixup', alpha=0.2)),
)
optim_wrapper = dict(
    clip_grad=dict(max_norm=1.0),
    paramwise_cfg=dict(custom_keys={
        '.cls_token': dict(decay_mult=0.0),
        '.dist_token': dict(decay_mult=0.0),
        '.pos_embed': dict(decay_mult=0.0),
    }))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
# OVKitValLoss logs the validation cross-entropy (mmpretrain logs no val loss by itself).
val_evaluator = [dict(type='Accuracy', topk=(1, 5)), dict(type='OVKitValLoss')]
test_evaluator = val_evaluator
