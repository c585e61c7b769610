# ViT-L/32 from scratch on ImageNet-1k: the B/16 recipe (as mmpretrain's
# vit-large-p32_64xb64_in1k.py) with the large encoder and 32-pixel patches.
_base_ = './vit-base-p16_64xb64_in1k.py'
model = dict(backbone=dict(arch='large', patch_size=32))
