# BARON on OV-LVIS (rare classes are novel): configs/baron/coco.py's detector and schedule, plus
# a class-agnostic mask head (Mask R-CNN), the 1203 LVIS classes, repeat-factor sampling and
# 180k iterations, 8 GPUs x 2 images.
#
#   tools/dist_train.sh configs/baron/lvis.py 8
#   python tools/test.py configs/baron/lvis.py work_dirs/lvis/iter_180000.pth   # APr/APc/APf
#
# Files it reads besides coco.py's weights (README "BARON" says how to make or obtain each):
#   data/lvis_v1/{train2017,val2017}/ (COCO 2017 images), data/lvis_v1/annotations/lvis_v1_val.json
#   data/lvis_v1/annotations/lvis_v1_train_norare.json
#       <- python tools/data/make_ov_splits.py lvis --ann lvis_v1_train.json --out-dir ...
#   data/metadata/lvis_v1_clip.npy
#       <- tools/data/gen_class_embeddings.py --classes data/metadata/lvis_v1_1203.txt
# Rare classes get no training boxes (the norare file drops them), so they are learned only
# through the CLIP-aligned embedding space, which is what APr measures.
_base_ = './coco.py'

data_root = 'data/lvis_v1/'
num_classes = 1203
num_words = 4

model = dict(
    roi_head=dict(
        bbox_head=dict(
            num_classes=num_classes,
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
            num_classes=num_classes,
            class_agnostic=True,  # open vocabulary: one mask per box, whatever its class
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0)),
        kd=dict(num_words=num_words)),
    train_cfg=dict(rcnn=dict(mask_size=28)),
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300, mask_thr_binary=0.5)))

# ---------------------------------------------------------------- data
dataset_type = 'LVISV1Dataset'
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
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=False),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ClassBalancedDataset',  # LVIS repeat-factor sampling
        oversample_thr=1e-3,
        dataset=dict(
            type=dataset_type,
            data_root=data_root,
            ann_file='annotations/lvis_v1_train_norare.json',
            data_prefix=dict(img=''),
            filter_cfg=dict(filter_empty_gt=True, min_size=32),
            pipeline=train_pipeline,
            backend_args=backend_args)))
val_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_val.json',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='LVISMetric',  # mmdet's, through the lvis API: AP, APr, APc, APf
    ann_file=data_root + 'annotations/lvis_v1_val.json',
    metric=['bbox', 'segm'],
    backend_args=backend_args)
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
max_iters = 180000
train_cfg = dict(max_iters=max_iters, val_interval=30000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[120000, 160000], gamma=0.1),
]
