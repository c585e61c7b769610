# BARON on shapes data: the tiny sibling of configs/baron/coco.py (same structure: a KD batch of
# its own through mmdet's MultiBranch, detached RPN objectness, MLP box regressor, background
# weight 0.7, novel classes out of the training softmax, bags with MaskCLIP-style single-region
# features, boxes cache), with the tiny CLIP that tools/data/train_shapes_clip.py trains on
# shapes crops of every class. Trained on base-class boxes only; evaluated on all classes
# (novel AP50 is the open-vocabulary score). `make demo` runs it (docs/baron.md). Prepare:
#   python tools/data/make_shapes.py --out data/shapes --kinds coco --num-train 400 --num-val 100
#   python tools/data/train_shapes_clip.py --out-dir data/shapes/clip --seed 0
#   python tools/data/gen_class_embeddings.py --model-name tiny \
#       --clip-checkpoint data/shapes/clip/shapes_clip_seed0.pth \
#       --classes data/shapes/classes.txt --out data/shapes/baron/shapes_clip.npy
#   tools/dist_train.sh configs/baron/shapes.py 2
_base_ = [
    '../_base_/models/faster_rcnn_r18_fpn_tiny.py',
    '../_base_/datasets/shapes_detection.py',
    '../_base_/schedules/tiny_iters.py',
    '../_base_/mmdet_runtime.py',
]
from ovkit.shapes import NOVEL_CLASS_IDS, SHAPE_CLASSES

custom_imports = dict(imports=['ovkit.baron'], allow_failed_imports=False)

data_root = 'data/shapes/coco/'
clip_checkpoint = 'data/shapes/clip/shapes_clip_seed0.pth'  # tools/data/train_shapes_clip.py
cls_embeddings_path = 'data/shapes/baron/shapes_clip.npy'  # gen_class_embeddings.py
novel_class_ids = list(NOVEL_CLASS_IDS)  # star, ring (ovkit.shapes.NOVEL_CLASSES)
num_words = 4
word_dim = 64  # the tiny CLIP's text width (and embed dim)
fc = 256

model = dict(
    type='Baron',
    clip_cfg=dict(model_name='tiny', checkpoint=clip_checkpoint),
    data_preprocessor=dict(
        _delete_=True,
        type='MultiBranchDataPreprocessor',
        data_preprocessor=dict(
            type='DetDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32)),
    rpn_head=dict(type='DetachRPNHead'),
    roi_head=dict(
        type='BaronRoIHead',
        bbox_head=dict(
            type='BaronShared2FCBBoxHead',
            fc_out_channels=fc,
            num_classes=len(SHAPE_CLASSES),
            num_words=num_words,
            word_dim=word_dim,
            cls_embeddings_path=cls_embeddings_path,
            bg_embedding='learn',
            cls_temp=50.0,
            words_drop_ratio=0.5,
            reg_class_agnostic=True,
            reg_predictor_cfg=[  # the reference's MLP regressor, at the tiny head's width
                dict(type='Linear', in_features=fc, out_features=fc),
                dict(type='ReLU', inplace=True),
                dict(type='Linear', in_features=fc, out_features=4)],
            novel_class_ids=novel_class_ids,
            class_weight=[1.0] * len(SHAPE_CLASSES) + [0.7]),
        kd=dict(
            type='BaronKD',
            num_words=num_words,
            word_dim=word_dim,
            embed_dim=word_dim,
            bag_temp=30.0,
            bag_weight=1.0,
            single_temp=50.0,
            single_weight=0.1,
            queue_length=256,
            single_features='maskclip',
            # the cache keeps boxes above score_thr in the same objectness units as the
            # sampler's objectness_thr, so the two thresholds go together (the reference: 0.85
            # and 0.85); at 0.85 here the cache replaced every proposal centre by the ground
            # truth from start_iter on, and novel AP50 fell to 1-5 on two seeds of three
            boxes_cache=dict(start_iter=300, num_boxes=50, nms_thr=0.1, score_thr=0.1),
            # Bags must centre on proposals (novel shapes are never ground truth here). The
            # reference's 0.85 assumes a SOCO-initialised RPN; this from-scratch tiny RPN with
            # detached objectness scores at most ~0.26 after 600 iterations (measured on the
            # val images), so 0.5 left only base ground-truth boxes as centres and novel AP50
            # at 0.3; 0.1 takes the proposals (docs/baron.md).
            sampler=dict(num_proposals=300, objectness_thr=0.1, use_gt=True))),
    test_cfg=dict(rcnn=dict(score_thr=0.01, max_per_img=100)))

# two sources, 2 + 2 images per process: detection images (base boxes) and KD images (every
# image of the same json, also those whose shapes are all novel)
metainfo = dict(classes=SHAPE_CLASSES)
branch_field = ['det_batch', 'kd_batch']
batch_split = [2, 2]


def _pipeline(branch):
    return [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='Resize', scale=(128, 128), keep_ratio=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='MultiBranch', branch_field=branch_field, **{branch: dict(type='PackDetInputs')}),
    ]


train_dataloader = dict(
    _delete_=True,
    batch_size=sum(batch_split),
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='GroupMultiSourceSampler', batch_size=sum(batch_split),
                 source_ratio=batch_split),
    batch_sampler=None,
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/train_base.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4),
                 pipeline=_pipeline('det_batch')),
            dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/train_base.json', data_prefix=dict(img='train/'),
                 filter_cfg=dict(filter_empty_gt=False),
                 pipeline=_pipeline('kd_batch')),
        ]))
val_evaluator = dict(
    _delete_=True,
    type='OVCocoAP50Metric',
    ann_file=data_root + 'annotations/val.json',
    metric='bbox')
test_evaluator = val_evaluator

# long enough to be a working detector (base AP50 93-99 on three seeds at 900 iterations,
# 25-95 at 600); e2e tests shorten it with --cfg-options
max_iters = 900
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.75)], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=0.01))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', interval=max_iters, by_epoch=False, max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
randomness = dict(seed=0)
