# BARON on OV-LVIS (rare classes are novel): Mask R-CNN R50-FPN with a class-agnostic mask
# head, bag-of-regions alignment with CLIP ViT-B/32, repeat-factor sampling, 180k iterations,
# 8 GPUs x 2 images, AMP, SyncBN.
#
#   tools/dist_train.sh configs/baron/lvis.py 8
#   python tools/test.py configs/baron/lvis.py work_dirs/lvis/iter_180000.pth   # APr/APc/APf
#
# Files it reads (README "BARON" says how to make or obtain each):
#   data/lvis_v1/{train2017,val2017}/ (COCO 2017 images), data/lvis_v1/annotations/lvis_v1_val.json
#   data/lvis_v1/annotations/lvis_v1_train_norare.json
#       <- python tools/data/make_ov_splits.py lvis --ann lvis_v1_train.json --out-dir ...
#   checkpoints/clip/ViT-B-32.pt, checkpoints/res50_fpn_soco_star_400.pth
#   data/metadata/lvis_v1_clip.npy
#       <- tools/data/gen_class_embeddings.py --classes data/metadata/lvis_v1_1203.txt
# Rare classes get no training boxes (the norare file drops them), so they are learned only
# through the CLIP-aligned embedding space, which is what APr measures.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['ovkit.baron'], allow_failed_imports=False)

data_root = 'data/lvis_v1/'
clip_checkpoint = 'checkpoints/clip/ViT-B-32.pt'
backbone_checkpoint = 'checkpoints/res50_fpn_soco_star_400.pth'
cls_embeddings_path = 'data/metadata/lvis_v1_clip.npy'
num_classes = 1203
num_words = 4
word_dim = 512
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    type='Baron',
    clip_cfg=dict(model_name='ViT-B-32', checkpoint=clip_checkpoint),
    backbone=dict(
        norm_cfg=norm_cfg,
        norm_eval=False,
        frozen_stages=-1,
        init_cfg=dict(type='Pretrained', prefix='backbone.', checkpoint=backbone_checkpoint)),
    neck=dict(
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', prefix='neck.', checkpoint=backbone_checkpoint)),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        type='BaronRoIHead',
        bbox_head=dict(
            _delete_=True,
            type='BaronShared4Conv1FCBBoxHead',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=num_classes,
            num_words=num_words,
            word_dim=word_dim,
            cls_embeddings_path=cls_embeddings_path,
            bg_embedding='learn',
            cls_temp=50.0,
            test_cls_temp=50.0,
            words_drop_ratio=0.5,
            norm_cfg=norm_cfg,
            reg_class_agnostic=True,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        mask_head=dict(num_classes=num_classes, class_agnostic=True),
        kd=dict(
            type='BaronKD',
            num_words=num_words,
            word_dim=word_dim,
            embed_dim=512,
            bag_temp=30.0,
            bag_weight=1.0,
            single_temp=50.0,
            single_weight=0.1,
            queue_length=1024,
            word_drop_ratio=0.5,
            sampler=dict(num_proposals=300, objectness_thr=0.85, nms_thr=0.1,
                         max_groups=3, max_permutations=2, alpha=3.0, cut_off_thr=0.3,
                         base_probability=0.3, interval=-0.1, use_gt=True))),
    test_cfg=dict(
        rcnn=dict(score_thr=0.0001, nms=dict(type='nms', iou_threshold=0.5),
                  max_per_img=300, mask_thr_binary=0.5)))

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
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
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
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/lvis_v1_val.json',
        data_prefix=dict(img=''),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='LVISMetric',  # mmdet's, through the lvis API: AP, APr, APc, APf
    ann_file=data_root + 'annotations/lvis_v1_val.json',
    metric=['bbox', 'segm'],
    backend_args=backend_args)
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
max_iters = 180000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=30000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[120000, 160000], gamma=0.1),
]
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=2.5e-5),
    clip_grad=dict(max_norm=35, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10000, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
