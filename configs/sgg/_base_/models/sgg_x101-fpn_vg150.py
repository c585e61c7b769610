# SGB's relation model (configs/e2e_relation_X_101_32_8_FPN_1x.yaml): a frozen X-101-32x8d FPN
# Faster R-CNN (mmdet modules) with the relation head on top. The detector weights come from
# SGB's released VG detector, converted to mmdet names:
#   python tools/model_converters/sgb_detector.py \
#       pretrained_faster_rcnn/model_final.pth checkpoints/sgb_vg150_faster-rcnn_x101-fpn.pth
# The converted weights compute what maskrcnn-benchmark computed only with its geometry (+1 box
# widths): SGBAnchorGenerator (generate_anchors' cell anchors; the converter checks the file's),
# SGBDeltaXYWHBBoxCoder (BoxCoder; mmdet's Legacy coder is 1 px off), SGBRoIExtractor
# (LevelMapper), RoIAlign(aligned=False), NMS with offset=1 (ovkit/sgg/sgb_geometry.py). The
# input is BGR 0..255 minus SGB's pixel mean.
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'

# Paths (override with --cfg-options): the converted detector and the GloVe 6B folder.
detector_checkpoint = 'checkpoints/sgb_vg150_faster-rcnn_x101-fpn.pth'
glove_dir = 'data/glove'  # holds glove.6B.200d.txt (https://nlp.stanford.edu/projects/glove/)

num_classes = 150
num_predicates = 50
fpn_channels = 256
mlp_dim = 4096  # SGB MLP_HEAD_DIM
sgb_roi_layer = dict(type='RoIAlign', output_size=7, sampling_ratio=2, aligned=False)

model = dict(
    type='SceneGraphDetector',
    mode='predcls',  # 'predcls' | 'sgcls' | 'sgdet': set by each config
    detector_checkpoint=detector_checkpoint,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[102.9801, 115.9465, 122.7717],
        std=[1.0, 1.0, 1.0],
        bgr_to_rgb=False,
        pad_size_divisor=32),
    backbone=dict(
        type='ResNeXt',
        depth=101,
        groups=32,
        base_width=8,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=4,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=None),  # weights: detector_checkpoint
    neck=dict(in_channels=[256, 512, 1024, 2048], out_channels=fpn_channels, num_outs=5),
    rpn_head=dict(
        # RPN.ANCHOR_STRIDE / ANCHOR_SIZES / ASPECT_RATIOS (the ratios from neural-motifs)
        anchor_generator=dict(
            _delete_=True,
            type='SGBAnchorGenerator',
            strides=[4, 8, 16, 32, 64],
            sizes=[32, 64, 128, 256, 512],
            ratios=[0.23232838, 0.63365731, 1.28478321, 3.15089189]),
        bbox_coder=dict(type='SGBDeltaXYWHBBoxCoder', target_means=[0.] * 4,
                        target_stds=[1.0] * 4)),
    roi_head=dict(
        bbox_roi_extractor=dict(type='SGBRoIExtractor', roi_layer=sgb_roi_layer),
        bbox_head=dict(
            fc_out_channels=mlp_dim,
            num_classes=num_classes,
            # MODEL.ROI_HEADS.BBOX_REG_WEIGHTS (10, 10, 5, 5) = 1 / stds
            bbox_coder=dict(type='SGBDeltaXYWHBBoxCoder', target_means=[0.] * 4,
                            target_stds=[0.1, 0.1, 0.2, 0.2]))),
    relation_head=dict(
        type='RelationHead',
        num_classes=num_classes,
        num_predicates=num_predicates,
        box_feature_extractor=dict(
            type='RelationBoxFeatureExtractor',
            # the detector's pooler (SGB's relation box features use the same LevelMapper)
            roi_extractor=dict(type='SGBRoIExtractor', roi_layer=sgb_roi_layer,
                               out_channels=fpn_channels, featmap_strides=[4, 8, 16, 32]),
            in_channels=fpn_channels, roi_feat_size=7, mlp_dims=(mlp_dim, mlp_dim)),
        union_feature_extractor=dict(
            type='RelationUnionFeatureExtractor',
            # POOLING_ALL_LEVELS: every FPN level, concatenated, conv3x3 back to 256
            roi_extractor=dict(type='AllLevelsRoIExtractor', roi_layer=sgb_roi_layer,
                               out_channels=fpn_channels, featmap_strides=[4, 8, 16, 32]),
            in_channels=fpn_channels, roi_feat_size=7, mlp_dims=(mlp_dim, mlp_dim)),
        # BATCH_SIZE_PER_IMAGE 1024, POSITIVE_FRACTION 0.25, NUM_SAMPLE_PER_GT_REL 4,
        # REQUIRE_BOX_OVERLAP False (SGDet training), TEST.RELATION.REQUIRE_OVERLAP False
        sampler=dict(type='RelationPairSampler', batch_size_per_image=1024,
                     positive_fraction=0.25, fg_iou_thr=0.5, num_sample_per_gt_rel=4,
                     require_overlap=False, test_require_overlap=False),
        loss_rel=dict(type='CrossEntropyLoss', loss_weight=1.0),
        loss_obj=dict(type='CrossEntropyLoss', loss_weight=1.0),
        # the frequency statistics: SGGStatisticsHook fills in the train set and the work dir
        statistics=None,
        # SGB MotifPredictor defaults; the IMP configs replace this dict
        predictor=dict(type='MotifsPredictor', glove_dir=glove_dir, embed_dim=200,
                       hidden_dim=512, pooling_dim=mlp_dim, dropout=0.2, num_obj_layers=1,
                       num_edge_layers=1, later_nms_thr=0.5)),
    train_cfg=dict(
        # SGDet training proposals (RPN in SGB's train mode: 6000 pre-NMS, 1000 kept)
        # (maskrcnn's nms counts +1 widths: offset=1; min_size 0 keeps every box: -1 here)
        rpn_proposal=dict(nms_pre=6000, max_per_img=1000,
                          nms=dict(type='nms', iou_threshold=0.7, offset=1), min_bbox_size=-1),
        # SGDet training: a proposal takes the label of its ground-truth box at IoU >= 0.5
        rcnn=dict(assigner=dict(pos_iou_thr=0.5, neg_iou_thr=0.3, min_pos_iou=0.5,
                                match_low_quality=False))),
    test_cfg=dict(
        rpn=dict(nms_pre=6000, max_per_img=1000,
                 nms=dict(type='nms', iou_threshold=0.7, offset=1), min_bbox_size=-1),
        # SGDet boxes: score > 0.01, class-wise NMS 0.3, one class per box, <= 80 per image
        rcnn=dict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.3, offset=1),
                  max_per_img=80)))
