# BARON on shapes data with a tiny random CLIP: the CI/demo sibling of configs/baron/coco.py.
# Same structure as the COCO config (base-only training, novel classes zero-weighted, bag
# alignment), only small. Prepare:
#   python tools/data/make_shapes.py --out data/shapes
#   python tools/data/gen_class_embeddings.py --model-name tiny --classes data/shapes/classes.txt \
#       --out data/shapes/baron/shapes_tiny_clip.npy
#   tools/dist_train.sh configs/baron/shapes.py 2
_base_ = [
    '../_base_/models/faster_rcnn_r18_fpn_tiny.py',
    '../_base_/datasets/shapes_detection.py',
    '../_base_/schedules/tiny_iters.py',
    '../_base_/mmdet_runtime.py',
]
from ovkit.shapes import NOVEL_CLASS_IDS, SHAPE_CLASSES

custom_imports = dict(imports=['ovkit.baron'], allow_failed_imports=False)

clip_cfg = dict(model_name='tiny', seed=0)  # text width 64, embed dim 64 (ovkit.clip)
data_root = 'data/shapes/coco/'
cls_embeddings_path = 'data/shapes/baron/shapes_tiny_clip.npy'
novel_class_ids = list(NOVEL_CLASS_IDS)  # star, ring (ovkit.shapes.NOVEL_CLASSES)

model = dict(
    type='Baron',
    clip_cfg=clip_cfg,
    roi_head=dict(
        type='BaronRoIHead',
        bbox_head=dict(
            type='BaronShared2FCBBoxHead',
            num_classes=len(SHAPE_CLASSES),
            num_words=4,
            word_dim=64,
            cls_embeddings_path=cls_embeddings_path,
            bg_embedding='learn',
            cls_temp=50.0,
            test_cls_temp=50.0,
            words_drop_ratio=0.5,
            reg_class_agnostic=True,
            novel_class_ids=novel_class_ids),
        kd=dict(
            type='BaronKD',
            num_words=4,
            word_dim=64,
            embed_dim=64,
            bag_temp=30.0,
            bag_weight=1.0,
            single_temp=50.0,
            single_weight=0.1,
            queue_length=64,
            sampler=dict(num_proposals=50, objectness_thr=0.5, use_gt=True))))

# Train on base-class boxes only; evaluate every class (novel AP50 is the open-vocab score).
train_dataloader = dict(dataset=dict(ann_file='annotations/train_base.json'))
val_evaluator = dict(
    _delete_=True,
    type='OVCocoAP50Metric',
    ann_file=data_root + 'annotations/val.json',
    metric='bbox')
test_evaluator = val_evaluator

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type='CheckpointHook', interval=20, by_epoch=False, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=5, by_epoch=False)
randomness = dict(seed=0)
