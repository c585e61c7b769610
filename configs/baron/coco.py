# BARON on OV-COCO (48 base / 17 novel classes): Faster R-CNN R50-FPN, bag-of-regions alignment
# with CLIP ViT-B/32, "attn12" text features, 90k iterations, 8 GPUs x 2 images, AMP, SyncBN.
#
#   tools/dist_train.sh configs/baron/coco.py 8
#   python tools/test.py configs/baron/coco.py work_dirs/coco/iter_90000.pth
#
# Files it reads (README "BARON" says how to make or obtain each):
#   data/coco/{train2017,val2017}/, data/coco/annotations/instances_{train,val}2017_ov_*.json
#       <- python tools/data/make_ov_splits.py coco --ann instances_train2017.json ...
#   checkpoints/clip/ViT-B-32.pt                 OpenAI CLIP ViT-B/32 weights
#   checkpoints/res50_fpn_soco_star_400.pth      SOCO self-supervised R50-FPN (BARON's init)
#   data/metadata/coco_ov_65_clip_attn12.npy     <- tools/data/gen_class_embeddings.py --layer 12
# Override any of them with --cfg-options, e.g. model.clip_cfg.checkpoint=/path/ViT-B-32.pt.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(imports=['ovkit.baron'], allow_failed_imports=False)

data_root = 'data/coco/'
clip_checkpoint = 'checkpoints/clip/ViT-B-32.pt'
backbone_checkpoint = 'checkpoints/res50_fpn_soco_star_400.pth'
cls_embeddings_path = 'data/metadata/coco_ov_65_clip_attn12.npy'

# data/metadata/coco_ov_65.txt, in COCO category order; novel = coco_ov_17_novel.txt.
classes = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow', 'elephant', 'bear', 'zebra',
    'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee', 'skis',
    'snowboard', 'kite', 'skateboard', 'surfboard', 'bottle', 'cup', 'fork', 'knife', 'spoon',
    'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot', 'pizza', 'donut',
    'cake', 'chair', 'couch', 'bed', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard',
    'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase',
    'scissors', 'toothbrush',
)
novel_class_ids = [4, 5, 11, 12, 15, 16, 21, 23, 27, 29, 32, 34, 45, 47, 54, 58, 63]
num_words = 6
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
            num_classes=len(classes),
            num_words=num_words,
            word_dim=word_dim,
            cls_embeddings_path=cls_embeddings_path,
            use_attn12_output=True,
            bg_embedding='learn',
            cls_temp=50.0,
            test_cls_temp=50.0,
            words_drop_ratio=0.5,
            novel_class_ids=novel_class_ids,
            norm_cfg=norm_cfg,
            reg_class_agnostic=True,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
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
            sampler=dict(
                num_proposals=300, nms_thr=0.1, shape_ratio_thr=0.25, area_ratio_thr=0.01,
                objectness_thr=0.85, max_groups=3, max_permutations=2, alpha=3.0,
                cut_off_thr=0.3, base_probability=0.3, interval=-0.1, use_gt=True))),
    test_cfg=dict(rcnn=dict(score_thr=0.001, nms=dict(type='nms', iou_threshold=0.5),
                            max_per_img=100)))

# ---------------------------------------------------------------- data
dataset_type = 'CocoDataset'
metainfo = dict(classes=classes)
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize',
         scales=[(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)],
         keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
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
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train2017_ov_base.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val2017_ov_all.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='OVCocoAP50Metric',
    ann_file=data_root + 'annotations/instances_val2017_ov_all.json',
    novel_classes=None,  # read from the categories' "split" field written by make_ov_splits
    metric='bbox',
    backend_args=backend_args)
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
max_iters = 90000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[60000, 80000], gamma=0.1),
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
