# BARON on OV-COCO (48 base / 17 novel classes), the reference's recipe (wusize/ovdet,
# baron_kd_faster_rcnn_r50_fpn_syncbn_90kx2.py, 34.6 novel AP50): Faster R-CNN R50-FPN, SyncBN,
# bag-of-regions alignment with CLIP ViT-B/32 on 2 extra KD images per GPU, 16 GPUs x (2 + 2)
# images, lr 0.04, 90k iterations, AMP. With 8 or 2 GPUs add --auto-scale-lr (lr 0.02 / 0.005;
# docs/baron.md).
#
#   tools/dist_train.sh configs/baron/coco.py 16 [--auto-scale-lr]
#   python tools/test.py configs/baron/coco.py work_dirs/coco/iter_90000.pth
#
# Files it reads (docs/baron.md says how to make or obtain each):
#   data/coco/{train2017,val2017}/, data/coco/annotations/instances_{train,val}2017_ov_*.json
#       <- python tools/data/make_ov_splits.py coco --ann instances_train2017.json ...
#          (every image kept: the KD batch draws images whose objects are all novel, and the
#          evaluation runs on all 5000 val images)
#   checkpoints/clip/ViT-B-32.pt                 OpenAI CLIP ViT-B/32 weights
#   checkpoints/res50_fpn_soco_star_400.pth      SOCO self-supervised R50-FPN (load_from)
#   data/metadata/coco_ov_65_clip_attn12.npy     <- tools/data/gen_class_embeddings.py --layer 12
# Override any of them with --cfg-options, e.g. model.clip_cfg.checkpoint=/path/ViT-B-32.pt.
_base_ = [
    '../_base_/models/baron_faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    '../_base_/schedules/baron_90k.py',
    '../_base_/mmdet_runtime.py',
]
from ovkit.metadata import class_names

custom_imports = dict(imports=['ovkit.baron'], allow_failed_imports=False)

data_root = 'data/coco/'
# The 65 OV-COCO classes in COCO category order; novel: the 17 of coco_ov_17_novel.txt.
classes = class_names('coco_ov_65.txt')
novel_classes = class_names('coco_ov_17_novel.txt')
novel_class_ids = [classes.index(name) for name in novel_classes]
# The reference classifies the 80 COCO classes + background and evaluates 65: the other 15
# are scored at test time (they take probability mass) and their detections dropped.
extra_test_classes = [name for name in class_names('coco_80.txt') if name not in classes]
cls_embeddings_path = 'data/metadata/coco_ov_65_clip_attn12.npy'
load_from = 'checkpoints/res50_fpn_soco_star_400.pth'

model = dict(
    extra_test_classes=extra_test_classes,
    roi_head=dict(
        bbox_head=dict(
            num_classes=len(classes),
            cls_embeddings_path=cls_embeddings_path,
            novel_class_ids=novel_class_ids,  # weight 0: out of the training softmax
            class_weight=[1.0] * len(classes) + [0.7])))  # background 0.7 (the KD config's)

# mmdet's COCO detection data, on the OV splits made by tools/data/make_ov_splits.py: one
# ConcatDataset of the detection set (images with base boxes) and the KD set (the same json,
# every image), 2 + 2 images per GPU from mmdet's GroupMultiSourceSampler, each pipeline
# ending in mmdet's MultiBranch so that the model gets {'det_batch': ..., 'kd_batch': ...}.
metainfo = dict(classes=classes)
backend_args = None
branch_field = ['det_batch', 'kd_batch']
batch_split = [2, 2]
scales = [(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)]
det_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branch_field, det_batch=dict(type='PackDetInputs')),
]
kd_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),  # base boxes join the bag centres (use_gt)
    dict(type='RandomChoiceResize', scales=scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branch_field, kd_batch=dict(type='PackDetInputs')),
]
train_ann = 'annotations/instances_train2017_ov_base.json'
train_dataloader = dict(
    _delete_=True,
    batch_size=sum(batch_split),
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='GroupMultiSourceSampler', batch_size=sum(batch_split),
                 source_ratio=batch_split),
    batch_sampler=None,
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file=train_ann, data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=True, min_size=32),
                 pipeline=det_pipeline, backend_args=backend_args),
            dict(type='CocoDataset', data_root=data_root, metainfo=metainfo,
                 ann_file=train_ann, data_prefix=dict(img='train2017/'),
                 filter_cfg=dict(filter_empty_gt=False),
                 pipeline=kd_pipeline, backend_args=backend_args),
        ]))
val_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val2017_ov_all.json'))
test_dataloader = val_dataloader
val_evaluator = dict(
    _delete_=True,
    type='OVCocoAP50Metric',
    ann_file=data_root + 'annotations/instances_val2017_ov_all.json',
    novel_classes=None,  # read from the categories' "split" field written by make_ov_splits
    metric='bbox',
    backend_args=backend_args)
test_evaluator = val_evaluator

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10000, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
