"""Tiny SceneGraphDetector configs and hand-built batches for the model-side unit tests."""
import copy

import numpy as np
import torch
from mmdet.structures import DetDataSample
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

NUM_CLASSES = 5
NUM_PREDICATES = 4
FPN = 16


def tiny_detector_cfg(num_classes=NUM_CLASSES):
    """A narrow ResNet-18 FPN Faster R-CNN (mmdet modules), as configs/sgg's tiny detector."""
    return dict(
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
                               pad_size_divisor=32),
        backbone=dict(type='ResNet', depth=18, base_channels=8, num_stages=4,
                      out_indices=(0, 1, 2, 3), norm_cfg=dict(type='BN', requires_grad=True),
                      norm_eval=False, style='pytorch'),
        neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=FPN, num_outs=5),
        rpn_head=dict(
            type='RPNHead', in_channels=FPN, feat_channels=FPN,
            anchor_generator=dict(type='AnchorGenerator', scales=[4], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(
            type='StandardRoIHead',
            bbox_roi_extractor=dict(
                type='SingleRoIExtractor',
                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2, aligned=False),
                out_channels=FPN, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(
                type='Shared2FCBBoxHead', in_channels=FPN, fc_out_channels=32, roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                target_stds=[0.1, 0.1, 0.2, 0.2]),
                reg_class_agnostic=False,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                                   min_pos_iou=0.3, match_low_quality=True, ignore_iof_thr=-1),
                     sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5,
                                  neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=200, max_per_img=50, nms=dict(type='nms', iou_threshold=0.7),
                              min_bbox_size=0),
            rcnn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.3,
                                    min_pos_iou=0.5, match_low_quality=False, ignore_iof_thr=-1),
                      sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25,
                                   neg_pos_ub=-1, add_gt_as_proposals=True),
                      pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=200, max_per_img=50, nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.3), max_per_img=12)))


def fake_statistics(num_classes=NUM_CLASSES, num_predicates=NUM_PREDICATES, seed=0):
    rng = np.random.default_rng(seed)
    fg = rng.integers(0, 5, size=(num_classes + 1, num_classes + 1, num_predicates + 1))
    fg[:, :, 0] = 1 + rng.integers(0, 5, size=(num_classes + 1, num_classes + 1))
    pred_dist = np.log(fg / fg.sum(-1, keepdims=True) + 1e-3).astype(np.float32)
    return dict(fg_matrix=fg, pred_dist=pred_dist,
                obj_classes=['__background__'] + [f'c{i}' for i in range(num_classes)],
                rel_classes=['__background__'] + [f'r{i}' for i in range(num_predicates)])


def relation_head_cfg(predictor='MotifsPredictor', **predictor_kwargs):
    extractor = dict(roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2,
                                    aligned=False),
                     out_channels=FPN, featmap_strides=[4, 8, 16, 32])
    pred = dict(type=predictor)
    if predictor == 'MotifsPredictor':
        pred.update(embed_dim=8, hidden_dim=16, pooling_dim=32, dropout=0.0)
    elif predictor == 'IMPPredictor':
        pred.update(hidden_dim=16, pooling_dim=32)
    pred.update(predictor_kwargs)
    return dict(
        type='RelationHead', num_classes=NUM_CLASSES, num_predicates=NUM_PREDICATES,
        predictor=pred,
        box_feature_extractor=dict(
            type='RelationBoxFeatureExtractor',
            roi_extractor=dict(type='SingleRoIExtractor', **extractor),
            in_channels=FPN, roi_feat_size=7, mlp_dims=(32, 32)),
        union_feature_extractor=dict(
            type='RelationUnionFeatureExtractor',
            roi_extractor=dict(type='AllLevelsRoIExtractor', **extractor),
            in_channels=FPN, roi_feat_size=7, mlp_dims=(32, 32)),
        sampler=dict(type='RelationPairSampler', batch_size_per_image=64,
                     positive_fraction=0.25),
        statistics=fake_statistics())


def sgg_model_cfg(mode='predcls', predictor='MotifsPredictor', **predictor_kwargs):
    cfg = tiny_detector_cfg()
    cfg.update(type='SceneGraphDetector', mode=mode,
               relation_head=relation_head_cfg(predictor, **predictor_kwargs))
    return ConfigDict(cfg)


def build_in_mmdet_scope(cfg):
    """Build a model config under the mmdet default scope without leaking the scope."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    import ovkit.sgg  # noqa: F401  (registers the modules)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg)


def build_model(mode='predcls', predictor='MotifsPredictor', init=True, **predictor_kwargs):
    torch.manual_seed(0)
    model = build_in_mmdet_scope(sgg_model_cfg(mode, predictor, **predictor_kwargs))
    if init:
        model.init_weights()
    return model


# Boxes and relations of two hand-made images (xyxy in the ORIGINAL image).
IMAGES = [
    dict(shape=(60, 80), boxes=[[4, 4, 30, 28], [40, 6, 74, 30], [10, 34, 36, 56],
                                [44, 36, 70, 58]],
         labels=[0, 1, 2, 3], rels=[[0, 1, 1], [2, 3, 1], [0, 2, 2], [1, 3, 2], [3, 0, 3]]),
    dict(shape=(64, 64), boxes=[[2, 2, 26, 20], [30, 4, 60, 24], [8, 30, 40, 60]],
         labels=[4, 1, 0], rels=[[0, 1, 1], [1, 2, 4], [2, 0, 3]]),
]


def fake_batch(model, scale=1.5, training=True, images=IMAGES, seed=0):
    """Run the model's data preprocessor on hand-built samples; images are resized by
    ``scale`` (the boxes in ``gt_instances`` follow, the relations index them)."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for i, im in enumerate(images):
        h, w = im['shape']
        rh, rw = int(round(h * scale)), int(round(w * scale))
        img = (torch.rand(3, rh, rw, generator=g) * 255)
        s = DetDataSample(metainfo=dict(
            img_id=i, img_path=f'img{i}.jpg', ori_shape=(h, w), img_shape=(rh, rw),
            scale_factor=(rw / w, rh / h), flip=False, flip_direction=None,
            batch_input_shape=None))
        boxes = torch.tensor(im['boxes'], dtype=torch.float32)
        boxes = boxes * torch.tensor([rw / w, rh / h, rw / w, rh / h])
        s.gt_instances = InstanceData(bboxes=boxes, labels=torch.tensor(im['labels']))
        rels = torch.tensor(im['rels'])
        s.gt_relations = InstanceData(pairs=rels[:, :2], labels=rels[:, 2])
        inputs.append(img)
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=inputs, data_samples=samples), training)
    return data['inputs'], data['data_samples']


def fake_proposals(num_boxes=(4, 3), mode='predcls', num_classes=NUM_CLASSES, seed=0,
                   img_shape=(64, 80)):
    """Per-image InstanceData as the detector hands them to the predictors."""
    g = torch.Generator().manual_seed(seed)
    props = []
    for n in num_boxes:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([img_shape[1] - 20, img_shape[0] - 20])
        wh = 4 + torch.rand(n, 2, generator=g) * 15
        p = InstanceData(metainfo=dict(img_shape=img_shape))
        p.bboxes = torch.cat([xy, xy + wh], 1)
        p.labels = torch.randint(1, num_classes + 1, (n,), generator=g)
        if mode != 'predcls':
            p.predict_logits = torch.randn(n, num_classes + 1, generator=g)
        if mode == 'sgdet':
            jitter = torch.rand(n, num_classes + 1, 4, generator=g) * 2
            p.boxes_per_cls = p.bboxes[:, None] + jitter
        props.append(p)
    return props


def copy_cfg(cfg):
    return copy.deepcopy(cfg)
