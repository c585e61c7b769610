# ViT-L/16 from scratch on ImageNet-1k: the B/16 recipe (as mmpretrain's
# vit-large-p16_64xb64_in1k.py) with the large encoder (1024 wide, 24 blocks, 16 heads).
_base_ = './vit-base-p16_64xb64_in1k.py'
model = dict(backbone=dict(arch='large', patch_size=16))
