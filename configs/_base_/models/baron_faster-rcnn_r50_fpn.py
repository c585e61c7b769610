# BARON's detector (Faster R-CNN R50-FPN, SyncBN, 4conv1fc box head whose region features become
# pseudo words for a frozen CLIP ViT-B/32, bag-of-regions alignment), on mmdet's
# faster-rcnn_r50_fpn base. Dataset-specific values (num_classes, cls_embeddings_path,
# novel_class_ids) come from the dataset config (configs/baron/coco.py, lvis.py).
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'

clip_checkpoint = 'checkpoints/clip/ViT-B-32.pt'
backbone_checkpoint = 'checkpoints/res50_fpn_soco_star_400.pth'
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
            num_words=num_words,
            word_dim=word_dim,
            use_attn12_output=True,
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
