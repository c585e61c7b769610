# The tiny shapes-video PP-TSM without its temporal shift: the same 2D ResNet18-vd sees each
# frame alone and averages them, so it cannot tell a motion from its time reversal
# (move_up / move_down, grow / shrink) and stays near 50% top-1, where PP-TSM gets ~100%.
_base_ = './pptsm_tiny-r18_2xb4-1x1x8-24e_shapes-video.py'

model = dict(backbone=dict(is_shift=False))
