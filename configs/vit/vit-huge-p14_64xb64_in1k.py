# ViT-H/14 from scratch on ImageNet-1k: the B/16 recipe with the huge encoder (1280 wide,
# 32 blocks, 16 heads, 14-pixel patches; 257 tokens at 224). mmpretrain ships no H/14 recipe;
# gradient checkpointing keeps 64 images per GPU within memory.
_base_ = './vit-base-p16_64xb64_in1k.py'
model = dict(backbone=dict(arch="huge", patch_size=14, with_cp=True))
