# The relation model at CPU scale: the tiny shapes Faster R-CNN (ResNet-18 at 1/4 width, 32-d
# FPN) frozen under a relation head with 64-d MLPs, the same modules as the VG150 configs.
# BatchNorm momenta are 0.1 instead of SGB's 0.01 / 0.001: SGB's running statistics average
# over 100 / 1000 iterations, longer than these schedules, and would not be ready at test time.
_base_ = '../../../_base_/models/faster_rcnn_r18_fpn_tiny.py'
from ovkit.shapes import SHAPE_CLASSES, SHAPE_PREDICATES

# the detector trained by faster-rcnn_r18-fpn_tiny_shapes-vg150.py (None: random, PredCls only)
detector_checkpoint = None
fpn_channels = 32
mlp_dim = 64  # = the tiny bbox head's fc_out_channels, so the relation MLPs start from it
sgb_roi_layer = dict(type='RoIAlign', output_size=7, sampling_ratio=2, aligned=False)

model = dict(
    type='SceneGraphDetector',
    mode='predcls',
    detector_checkpoint=detector_checkpoint,
    roi_head=dict(bbox_head=dict(num_classes=len(SHAPE_CLASSES))),
    relation_head=dict(
        type='RelationHead',
        num_classes=len(SHAPE_CLASSES),
        num_predicates=len(SHAPE_PREDICATES),
        box_feature_extractor=dict(
            type='RelationBoxFeatureExtractor',
            roi_extractor=dict(type='SingleRoIExtractor', roi_layer=sgb_roi_layer,
                               out_channels=fpn_channels, featmap_strides=[4, 8, 16, 32]),
            in_channels=fpn_channels, roi_feat_size=7, mlp_dims=(mlp_dim, mlp_dim)),
        union_feature_extractor=dict(
            type='RelationUnionFeatureExtractor',
            roi_extractor=dict(type='AllLevelsRoIExtractor', roi_layer=sgb_roi_layer,
                               out_channels=fpn_channels, featmap_strides=[4, 8, 16, 32]),
            in_channels=fpn_channels, roi_feat_size=7, mlp_dims=(mlp_dim, mlp_dim),
            bn_momentum=0.1),
        sampler=dict(type='RelationPairSampler', batch_size_per_image=1024,
                     positive_fraction=0.25),
        statistics=None,  # SGGStatisticsHook: the train set, cached in the work dir
        # no GloVe for shape names: random class vectors (glove_dir=None)
        predictor=dict(type='MotifsPredictor', glove_dir=None, embed_dim=32, hidden_dim=64,
                       pooling_dim=mlp_dim, dropout=0.2, box_bn_momentum=0.1)),
    train_cfg=dict(rcnn=dict(assigner=dict(pos_iou_thr=0.5, neg_iou_thr=0.3, min_pos_iou=0.5,
                                           match_low_quality=False))),
    # SGDet boxes as SGB (score > 0.01, class NMS 0.3) but at most 12 (<= 6 shapes per image)
    test_cfg=dict(rcnn=dict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.3),
                            max_per_img=12)))
