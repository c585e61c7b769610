# BARON on OV-LVIS (rare classes are novel), the reference's recipe (wusize/ovdet,
# baron_kd_mask_rcnn_r50_fpn_syncbn_45kx4_lvis.py): Mask R-CNN R50-FPN with a class-agnostic
# mask head, trainable SyncBN in the box head and a plain RPN (unlike OV-COCO), CLIP ViT-B/32
# projected text output at temperature 100 (test 100 / 0.7), bags of 500 proposals x 6 groups,
# rare classes out of the training softmax, repeat-factor sampling for both batches,
# 2 + 2 images per GPU, lr 0.08 for 45k iterations with gradient clipping at 35, AMP.
# The reference's GPU count for this config is not documented; base_batch_size assumes the
# OV-COCO setting (16 GPUs x 4 images) for --auto-scale-lr.
#
#   tools/dist_train.sh configs/baron/lvis.py 16 [--auto-scale-lr]
#   python tools/test.py configs/baron/lvis.py work_dirs/lvis/iter_45000.pth   # APr/APc/APf
#
# Files it reads besides the model's weights (docs/baron.md says how to make or obtain each):
#   data/lvis_v1/{train2017,val2017}/ (COCO 2017 images), data/lvis_v1/annotations/lvis_v1_val.json
#   data/lvis_v1/annotations/lvis_v1_train_norare.json and its category info
#   data/lvis_v1/annotations/lvis_v1_train_norare_cat_info.json (class weights: rare -> 0)
#       <- python tools/data/make_ov_splits.py lvis --ann lvis_v1_train.json --out-dir ...
#   class embeddings: DetPro's (data/metadata/lvis_v1_clip_detpro.npy, what the reference
#       trains with) when that file exists, else the hand-crafted prompt ensemble
#       data/metadata/lvis_v1_clip.npy <- tools/data/gen_class_embeddings.py
#       --classes lvis_v1_1203.txt
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
norm_cfg = dict(type='SyncBN', requires_grad=True)
train_ann = 'annotations/lvis_v1_train_norare.json'
# categories with image_count 0 in the no-rare annotations (the rare ones) get weight 0
class_weight_path = data_root + 'annotations/lvis_v1_train_norare_cat_info.json'
# the first existing file is used (and logged): DetPro's embeddings, else the hand-crafted ones
cls_embeddings_path = ['data/metadata/lvis_v1_clip_detpro.npy', 'data/metadata/lvis_v1_clip.npy']
load_from = 'checkpoints/res50_fpn_soco_star_400.pth'

model = dict(
    data_preprocessor=dict(data_preprocessor=dict(pad_mask=True)),
    rpn_head=dict(type='BaronRPNHead'),  # plain objectness here (the AMP-safe RPNHead)
    roi_head=dict(
        bbox_head=dict(
            num_classes=len(classes),
            num_words=num_words,
            cls_embeddings_path=cls_embeddings_path,
            use_attn12_output=False,  # projected last-layer output, as the embeddings files
            cls_temp=100.0,
            test_cls_temp=100.0 / 0.7,  # DetPro's test temperature, as the reference
            class_weight=class_weight_path,
            norm_cfg=norm_cfg,
            norm_eval=False),
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
            norm_cfg=norm_cfg,
            class_agnostic=True,  # open vocabulary: one mask per box, whatever its class
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0)),
        kd=dict(
            num_words=num_words,
            bag_temp=20.0,
            single_temp=30.0,
            boxes_cache=None,
            sampler=dict(num_proposals=500, max_groups=6))),
    train_cfg=dict(rcnn=dict(mask_size=28)),
    test_cfg=dict(rcnn=dict(score_thr=0.0001, max_per_img=300, mask_thr_binary=0.5)))

# mmdet's LVIS v1 data on the no-rare training annotations: repeat-factor sampling
# (ClassBalancedDataset) for the detection set and for the KD set (every image), MultiBranch.
backend_args = None
branch_field = ['det_batch', 'kd_batch']
batch_split = [2, 2]
scales = [(1333, 640), (1333, 672), (1333, 704), (1333, 736), (1333, 768), (1333, 800)]
det_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True, poly2mask=False),
    dict(type='RandomChoiceResize', scales=scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branch_field, det_batch=dict(type='PackDetInputs')),
]
kd_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=scales, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='MultiBranch', branch_field=branch_field, kd_batch=dict(type='PackDetInputs')),
]
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
            dict(type='ClassBalancedDataset', oversample_thr=1e-3,
                 dataset=dict(type='LVISV1Dataset', data_root=data_root, ann_file=train_ann,
                              data_prefix=dict(img=''),
                              filter_cfg=dict(filter_empty_gt=True, min_size=32),
                              pipeline=det_pipeline, backend_args=backend_args)),
            dict(type='ClassBalancedDataset', oversample_thr=1e-3,
                 dataset=dict(type='LVISV1Dataset', data_root=data_root, ann_file=train_ann,
                              data_prefix=dict(img=''),
                              filter_cfg=dict(filter_empty_gt=False, min_size=32),
                              pipeline=kd_pipeline, backend_args=backend_args)),
        ]))

max_iters = 45000
train_cfg = dict(max_iters=max_iters, val_interval=5000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[30000, 40000], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=0.08), clip_grad=dict(max_norm=35, norm_type=2))
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=5000, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
