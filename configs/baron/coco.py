# BARON on OV-COCO (48 base / 17 novel classes): Faster R-CNN R50-FPN, bag-of-regions alignment
# with CLIP ViT-B/32, "attn12" text features, 90k iterations, 8 GPUs x 2 images, AMP, SyncBN.
#
#   tools/dist_train.sh configs/baron/coco.py 8
#   python tools/test.py configs/baron/coco.py work_dirs/coco/iter_90000.pth
#
# Files it reads (docs/baron.md says how to make or obtain each):
#   data/coco/{train2017,val2017}/, data/coco/annotations/instances_{train,val}2017_ov_*.json
#       <- python tools/data/make_ov_splits.py coco --ann instances_train2017.json ...
#   checkpoints/clip/ViT-B-32.pt                 OpenAI CLIP ViT-B/32 weights
#   checkpoints/res50_fpn_soco_star_400.pth      SOCO self-supervised R50-FPN (BARON's init)
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
novel_class_ids = [classes.index(name) for name in class_names('coco_ov_17_novel.txt')]
cls_embeddings_path = 'data/metadata/coco_ov_65_clip_attn12.npy'

model = dict(
    roi_head=dict(
        bbox_head=dict(
            num_classes=len(classes),
            cls_embeddings_path=cls_embeddings_path,
            novel_class_ids=novel_class_ids)))

# mmdet's COCO detection data, on the OV splits made by tools/data/make_ov_splits.py.
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
train_dataloader = dict(
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train2017_ov_base.json',
        pipeline=train_pipeline))
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
