# PP-TSM R101 on Kinetics-400, uniform sampling (76.35 top-1 with distillation in PaddleVideo's
# model zoo): the R50 uniform recipe with the ResNet101-vd (SSLD) backbone.
#   python tools/model_converters/pptsm_paddle.py ResNet101_vd_ssld_pretrained.pdparams \
#       checkpoints/resnet101_vd_ssld.pth
_base_ = './pptsm_imagenet-pretrained-r50vd_8xb16-1x1x8-80e_kinetics400-rgb.py'

pretrained_checkpoint = '{{$PRETRAINED:checkpoints/resnet101_vd_ssld.pth}}'  # converted
model = dict(backbone=dict(depth=101, pretrained=pretrained_checkpoint))
