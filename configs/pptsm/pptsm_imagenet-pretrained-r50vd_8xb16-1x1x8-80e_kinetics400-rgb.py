# PP-TSM R50 on Kinetics-400, uniform sampling (PaddleVideo configs/recognition/pptsm/
# pptsm_k400_videos_uniform.yaml; 74.54 top-1, 75.11 with distillation): ImageNet
# ResNet50-vd (SSLD) init, 8 GPUs x 16 clips, 80 epochs, warmup 10 from 0.005 to the cosine at
# 0.01 per iteration, Nesterov, wd 1e-4, fc lr x5 / x10, mixup 0.2, label smoothing 0.1,
# precise BN (200 batches, every 5 epochs). Test: 1 clip, centre frame of each segment,
# centre crop 224.
#   python tools/model_converters/pptsm_paddle.py ResNet50_vd_ssld_v2_pretrained.pdparams \
#       checkpoints/resnet50_vd_ssld_v2.pth
#   tools/dist_train.sh \
#       configs/pptsm/pptsm_imagenet-pretrained-r50vd_8xb16-1x1x8-80e_kinetics400-rgb.py 8
_base_ = './pptsm_k400-distill-pretrained-r50_1xb16-1x1x8-30e_ucf101-rgb.py'
from ovkit.metadata import class_names as _shipped_class_names

# Roots: DATA_ROOT / PRETRAINED in the environment, or here (see the UCF101 base config).
data_root = '{{$DATA_ROOT:data/kinetics400}}'
video_root = f'{data_root}/videos_train'
video_root_val = f'{data_root}/videos_val'
ann_file_train = f'{data_root}/kinetics400_train_list_videos.txt'
ann_file_val = f'{data_root}/kinetics400_val_list_videos.txt'
label_map = None
class_names = _shipped_class_names('kinetics400_400.txt')
pretrained_checkpoint = '{{$PRETRAINED:checkpoints/resnet50_vd_ssld_v2.pth}}'  # converted
video_suffix = ''

num_classes = 400
model = dict(
    backbone=dict(pretrained=pretrained_checkpoint),
    cls_head=dict(num_classes=num_classes),
    data_preprocessor=dict(blending=dict(num_classes=num_classes)))

train_dataloader = dict(dataset=dict(ann_file=ann_file_train, suffix=video_suffix,
                                     data_prefix=dict(video=video_root),
                                     num_classes=num_classes))
val_dataloader = dict(dataset=dict(ann_file=ann_file_val, suffix=video_suffix,
                                   data_prefix=dict(video=video_root_val),
                                   num_classes=num_classes))
test_dataloader = dict(dataset=dict(ann_file=ann_file_val, suffix=video_suffix,
                                    data_prefix=dict(video=video_root_val),
                                    num_classes=num_classes))

max_epochs = 80
train_cfg = dict(max_epochs=max_epochs)
base_lr = 0.01
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(type='PaddleWarmupCosineLR', warmup_start_lr=0.005, warmup_epochs=10,
         max_epochs=max_epochs, by_epoch=True, convert_to_iter_based=True)
]
auto_scale_lr = dict(enable=False, base_batch_size=128)
