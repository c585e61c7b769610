# PP-TSM R50 on UCF101 (split 1) from ImageNet ResNet50-vd (PaddleVideo release/2.0.0
# configs/recognition/tsm/pptsm.yaml, 89.5 top-1 reported): ReLU backbone, 4 GPUs x 16 clips,
# 80 epochs, lr 0.01 -> 0.001 -> 0.0001 at epochs 40 / 60, wd 2e-4, momentum 0.9 without
# Nesterov, fc weight lr x1 and bias x2 (that release's TSMHead), precise BN on 80 batches.
#   python tools/model_converters/pptsm_paddle.py ResNet50_vd_ssld_v2_pretrained.pdparams \
#       checkpoints/resnet50_vd_ssld_v2.pth
#   tools/dist_train.sh \
#       configs/pptsm/pptsm_imagenet-pretrained-r50vd_4xb16-1x1x8-80e_ucf101-rgb.py 4
_base_ = './pptsm_k400-distill-pretrained-r50_1xb16-1x1x8-30e_ucf101-rgb.py'

pretrained_checkpoint = '{{$PRETRAINED:checkpoints/resnet50_vd_ssld_v2.pth}}'  # converted
model = dict(backbone=dict(pretrained=pretrained_checkpoint,
                           act_cfg=dict(_delete_=True, type='ReLU', inplace=True)))

max_epochs = 80
train_cfg = dict(max_epochs=max_epochs)
optim_wrapper = dict(
    paramwise_cfg=dict(fc_lr5=False),
    optimizer=dict(lr=0.01, momentum=0.9, nesterov=False, weight_decay=2e-4))
param_scheduler = [
    dict(type='MultiStepLR', milestones=[40, 60], gamma=0.1, by_epoch=True, begin=0,
         end=max_epochs)
]
custom_hooks = [
    dict(type='PaddlePreciseBNHook', num_iters=80, interval=5),
]
auto_scale_lr = dict(enable=False, base_batch_size=64)
