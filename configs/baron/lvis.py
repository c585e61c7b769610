# BARON on OV-LVIS (rare classes are novel): BARON's detector (configs/_base_/models/
# baron_faster-rcnn_r50_fpn.py) plus a class-agnostic mask head (Mask R-CNN), on mmdet's
# LVIS v1 instance data (repeat-factor sampling), the 1203 LVIS classes, 180k iterations,
# 8 GPUs x 2 images.
#
#   tools/dist_train.sh configs/baron/lvis.py 8
#   python tools/test.py configs/baron/lvis.py work_dirs/lvis/iter_180000.pth   # APr/APc/APf
#
# Files it reads besides the model's weights (docs/baron.md says how to make or obtain each):
#   data/lvis_v1/{train2017,val2017}/ (COCO 2017 images), data/lvis_v1/annotations/lvis_v1_val.json
#   data/lvis_v1/annotations/lvis_v1_train_norare.json
#       <- python tools/data/make_ov_splits.py lvis --ann lvis_v1_train.json --out-dir ...
#   data/metadata/lvis_v1_clip.npy
#       <- tools/data/gen_class_embeddings.py --classes lvis_v1_1203.txt
# Rare classes get no training boxes (the norare file drops them), so they are learned only
# through the CLIP-aligned embedding space, which is what APr measures.
_base_ = [
    '../_base_/models/baron_faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/lvis_v1_instance.py',
    '../_base_/schedules/baron_90k.py',
    '../_base_/mmdet_runtime.py',
]
from ovkit.metadata import class_names

custom_imports = dict(imports=['ovkit.baron'], allow_failed_imports=False)

data_root = 'data/lvis_v1/'
classes = class_names('lvis_v1_1203.txt')  # LVIS v1 category order (= mmdet's LVISV1Dataset)
num_words = 4

model = dict(
    roi_head=dict(
        bbox_head=dict(
            num_classes=len(classes),
            num_words=num_words,
            cls_embeddings_path='data/metadata/lvis_v1_clip.npy',
            use_attn12_output=False,  # projected last-layer output, as the embeddings file
            novel_class_ids=None),
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=len(classes),
            class_agnostic=True,  # open vocabulary: one mask per box, whatever its class
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0)),
        kd=dict(num_words=num_words)),
    train_cfg=dict(rcnn=dict(mask_size=28)),
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300, mask_thr_binary=0.5)))

# mmdet's LVIS v1 data on the no-rare training annotations.
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=False),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(
    dataset=dict(
        dataset=dict(
            data_root=data_root,
            ann_file='annotations/lvis_v1_train_norare.json',
            pipeline=train_pipeline)))

max_iters = 180000
train_cfg = dict(max_iters=max_iters, val_interval=30000)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=30000, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[120000, 160000], gamma=0.1),
]
