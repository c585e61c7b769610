# BARON's detector as its reference trains it on OV-COCO (wusize/ovdet,
# baron_kd_faster_rcnn_r50_fpn_syncbn_90kx2.py): Faster R-CNN R50-FPN with SyncBN, an RPN whose
# objectness reads detached features, a 4conv1fc box head with frozen BN whose region features
# become pseudo words for a frozen CLIP ViT-B/32 ("attn12" output), an MLP box regressor, and
# the bag-of-regions alignment (BaronKD) on a KD batch of its own (MultiBranch data, see
# configs/baron/coco.py). On mmdet's faster-rcnn_r50_fpn base. Dataset-specific values
# (num_classes, cls_embeddings_path, class_weight, extra_test_classes) come from the dataset
# config (configs/baron/coco.py, lvis.py).
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'

clip_checkpoint = 'checkpoints/clip/ViT-B-32.pt'
num_words = 6
word_dim = 512
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    type='Baron',
    clip_cfg=dict(model_name='ViT-B-32', checkpoint=clip_checkpoint),
    # detection images and KD images are two batches of one step (mmdet's MultiBranch)
    data_preprocessor=dict(
        _delete_=True,
        type='MultiBranchDataPreprocessor',
        data_preprocessor=dict(
            type='DetDataPreprocessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            pad_size_divisor=32)),
    det_branch='det_batch',
    kd_branch='kd_batch',
    # weights come with load_from (every matching key of the SOCO checkpoint), not init_cfg
    backbone=dict(norm_cfg=norm_cfg, norm_eval=False, frozen_stages=-1, init_cfg=None),
    neck=dict(norm_cfg=norm_cfg),
    rpn_head=dict(
        type='DetachRPNHead',  # objectness on detached features; one shared conv
        num_convs=1,
        anchor_generator=dict(scale_major=False)),  # detectron2's anchor order, as the reference
    roi_head=dict(
        type='BaronRoIHead',
        bbox_head=dict(
            _delete_=True,
            type='BaronShared4Conv1FCBBoxHead',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_words=num_words,
            word_dim=word_dim,
            use_attn12_output=True,
            bg_embedding='learn',
            cls_temp=50.0,
            test_cls_temp=None,  # = cls_temp
            cls_bias=None,
            words_drop_ratio=0.5,
            norm_cfg=dict(type='BN', requires_grad=False),  # frozen BN in the 4 shared convs
            norm_eval=True,
            reg_class_agnostic=True,
            reg_predictor_cfg=[  # the reference's 1024-1024-4 MLP regressor
                dict(type='Linear', in_features=1024, out_features=1024),
                dict(type='ReLU', inplace=True),
                dict(type='Linear', in_features=1024, out_features=4)],
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
            single_features='maskclip',  # MaskCLIP-style word and patch tokens on both sides
            # the reference starts its cache at its 20000th image visit per process, i.e.
            # iteration 10000 with 2 KD images per GPU (its counter counts images)
            boxes_cache=dict(start_iter=10000, num_boxes=300, nms_thr=0.1, score_thr=0.85),
            sampler=dict(
                num_proposals=300, nms_thr=0.1, shape_ratio_thr=0.25, area_ratio_thr=0.01,
                objectness_thr=0.85, max_groups=3, max_permutations=2, alpha=3.0,
                cut_off_thr=0.3, base_probability=0.3, interval=-0.1, use_gt=True))),
    test_cfg=dict(rcnn=dict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.5),
                            max_per_img=100)))
# as the reference (two forward passes per step, detection and KD; a safety net for DDP)
find_unused_parameters = True
