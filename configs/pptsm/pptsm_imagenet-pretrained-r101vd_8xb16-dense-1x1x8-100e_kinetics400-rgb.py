# PP-TSM R101 on Kinetics-400, dense sampling (PaddleVideo pptsm_k400_frames_dense_r101.yaml;
# 77.15 top-1 with distillation): ResNet101-vd (SSLD) init, 100 epochs, otherwise as the R50
# dense config. Every one of the 33 blocks shifts (mmaction2's R101 TSM shifts every second).
#   python tools/model_converters/pptsm_paddle.py ResNet101_vd_ssld_pretrained.pdparams \
#       checkpoints/resnet101_vd_ssld.pth
_base_ = './pptsm_imagenet-pretrained-r50vd_8xb16-dense-1x1x8-80e_kinetics400-rgb.py'

pretrained_checkpoint = '{{$PRETRAINED:checkpoints/resnet101_vd_ssld.pth}}'  # converted
model = dict(backbone=dict(depth=101, pretrained=pretrained_checkpoint))

max_epochs = 100
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='PaddleWarmupCosineLR', warmup_start_lr=0.01, warmup_epochs=10,
         max_epochs=max_epochs, by_epoch=True, convert_to_iter_based=True)
]
