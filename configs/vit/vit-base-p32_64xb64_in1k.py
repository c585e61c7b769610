# ViT-B/32 from scratch on ImageNet-1k: the B/16 recipe (mmpretrain's
# vit-base-p32_64xb64_in1k.py uses the same values) with 32-pixel patches.
_base_ = './vit-base-p16_64xb64_in1k.py'
model = dict(backbone=dict(patch_size=32))
