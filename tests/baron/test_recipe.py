"""configs/baron/coco.py and lvis.py hold the reference's recipe (wusize/ovdet KD configs).

Every value below is read from the reference's configs; tests/baron/test_e2e.py builds both
models and checks the built modules (RPN type, frozen BN, MLP regressor, class weights, extra
test classes, boxes cache) on top of these config values.
"""
import os.path as osp

import pytest
from mmengine.config import Config

from ovkit.metadata import class_names
from tests.conftest import REPO


def _cfg(name):
    return Config.fromfile(osp.join(REPO, 'configs', 'baron', name))


@pytest.fixture(scope='module')
def coco():
    return _cfg('coco.py')


@pytest.fixture(scope='module')
def lvis():
    return _cfg('lvis.py')


def _two_branch_data(cfg, dataset_type, wrapped):
    loader = cfg.train_dataloader
    assert loader.batch_size == 4 and loader.batch_sampler is None
    assert loader.sampler == dict(type='GroupMultiSourceSampler', batch_size=4,
                                  source_ratio=[2, 2])  # 2 detection + 2 KD images per GPU
    det, kd = loader.dataset.datasets
    assert loader.dataset.type == 'ConcatDataset'
    if wrapped:  # LVIS: repeat-factor sampling for both sources
        assert det.type == kd.type == 'ClassBalancedDataset'
        assert det.oversample_thr == kd.oversample_thr == 1e-3
        det, kd = det.dataset, kd.dataset
    assert det.type == kd.type == dataset_type
    assert det.ann_file == kd.ann_file  # the same base-annotation json
    assert det.filter_cfg.filter_empty_gt is True and det.filter_cfg.min_size == 32
    assert kd.filter_cfg.filter_empty_gt is False  # images with only novel objects are kept
    for source, branch in ((det, 'det_batch'), (kd, 'kd_batch')):
        last = source.pipeline[-1]
        assert last.type == 'MultiBranch' and list(last.branch_field) == ['det_batch',
                                                                           'kd_batch']
        assert last[branch] == dict(type='PackDetInputs')


def test_ov_coco_recipe(coco):
    m = coco.model
    assert m.type == 'Baron' and m.data_preprocessor.type == 'MultiBranchDataPreprocessor'
    assert (m.det_branch, m.kd_branch) == ('det_batch', 'kd_batch')
    assert m.backbone.norm_cfg == dict(type='SyncBN', requires_grad=True)
    assert m.backbone.init_cfg is None and m.neck.norm_cfg.type == 'SyncBN'
    assert coco.load_from == 'checkpoints/res50_fpn_soco_star_400.pth'  # every matching key
    # RPN: detached objectness, one shared conv, detectron2 anchor order
    assert m.rpn_head.type == 'DetachRPNHead' and m.rpn_head.num_convs == 1
    assert m.rpn_head.anchor_generator.scale_major is False
    head = m.roi_head.bbox_head
    assert head.type == 'BaronShared4Conv1FCBBoxHead' and head.reg_class_agnostic
    assert head.norm_cfg == dict(type='BN', requires_grad=False) and head.norm_eval is True
    assert [layer['type'] for layer in head.reg_predictor_cfg] == ['Linear', 'ReLU', 'Linear']
    assert [(layer.get('in_features'), layer.get('out_features'))
            for layer in head.reg_predictor_cfg] == [(1024, 1024), (None, None), (1024, 4)]
    assert (head.num_words, head.word_dim, head.use_attn12_output) == (6, 512, True)
    assert head.cls_temp == 50.0 and head.test_cls_temp is None and head.cls_bias is None
    assert head.bg_embedding == 'learn' and head.words_drop_ratio == 0.5
    classes = class_names('coco_ov_65.txt')
    assert head.num_classes == len(classes) == 65
    novel = class_names('coco_ov_17_novel.txt')
    assert sorted(classes[i] for i in head.novel_class_ids) == sorted(novel)
    assert head.class_weight == [1.0] * 65 + [0.7]  # background 0.7 in the KD config
    # the reference scores 80 classes + background at test time
    assert sorted(m.extra_test_classes) == sorted(
        set(class_names('coco_80.txt')) - set(classes)) and len(m.extra_test_classes) == 15
    kd = m.roi_head.kd
    assert (kd.bag_temp, kd.bag_weight, kd.single_temp, kd.single_weight) == (30., 1., 50., .1)
    assert kd.queue_length == 1024 and kd.word_drop_ratio == 0.5
    assert kd.single_features == 'maskclip'
    assert kd.boxes_cache == dict(start_iter=10000, num_boxes=300, nms_thr=0.1, score_thr=0.85)
    assert kd.sampler == dict(num_proposals=300, nms_thr=0.1, shape_ratio_thr=0.25,
                              area_ratio_thr=0.01, objectness_thr=0.85, max_groups=3,
                              max_permutations=2, alpha=3.0, cut_off_thr=0.3,
                              base_probability=0.3, interval=-0.1, use_gt=True)
    assert m.test_cfg.rcnn.score_thr == 0.01 and m.test_cfg.rcnn.max_per_img == 100
    # data: the KD batch of its own; evaluation on every val image (make_ov_splits keeps them)
    _two_branch_data(coco, 'CocoDataset', wrapped=False)
    assert coco.val_dataloader.dataset.ann_file == 'annotations/instances_val2017_ov_all.json'
    assert coco.test_evaluator.type == 'OVCocoAP50Metric'
    # schedule: lr 0.04 for 16 GPUs x 4 images, scaled from 64 images; no gradient clipping
    assert coco.optim_wrapper.type == 'AmpOptimWrapper'
    assert coco.optim_wrapper.optimizer.lr == 0.04 and 'clip_grad' not in coco.optim_wrapper
    assert coco.optim_wrapper.optimizer.weight_decay == 2.5e-5
    assert coco.auto_scale_lr.base_batch_size == 64
    assert coco.train_cfg.max_iters == 90000
    assert coco.param_scheduler[1].milestones == [60000, 80000]
    assert coco.find_unused_parameters is True


def test_ov_lvis_recipe(lvis):
    m = lvis.model
    assert m.rpn_head.type == 'BaronRPNHead'  # plain objectness on LVIS
    head = m.roi_head.bbox_head
    assert head.norm_cfg == dict(type='SyncBN', requires_grad=True) and head.norm_eval is False
    assert head.cls_temp == 100.0 and head.test_cls_temp == pytest.approx(100 / 0.7)
    assert head.num_words == 4 and head.use_attn12_output is False
    assert head.num_classes == 1203
    # rare classes out of the training softmax: weight 0 from the no-rare category info
    assert head.class_weight == 'data/lvis_v1/annotations/lvis_v1_train_norare_cat_info.json'
    assert head.get('novel_class_ids') is None
    # DetPro's embeddings when present, the hand-crafted ensemble otherwise
    assert list(head.cls_embeddings_path) == ['data/metadata/lvis_v1_clip_detpro.npy',
                                              'data/metadata/lvis_v1_clip.npy']
    assert [layer['type'] for layer in head.reg_predictor_cfg] == ['Linear', 'ReLU', 'Linear']
    kd = m.roi_head.kd
    assert (kd.bag_temp, kd.single_temp, kd.num_words) == (20.0, 30.0, 4)
    assert kd.sampler.num_proposals == 500 and kd.sampler.max_groups == 6
    assert kd.boxes_cache is None and kd.sampler.use_gt is True
    assert m.roi_head.mask_head.class_agnostic is True
    assert m.test_cfg.rcnn.score_thr == 0.0001 and m.test_cfg.rcnn.max_per_img == 300
    _two_branch_data(lvis, 'LVISV1Dataset', wrapped=True)
    assert lvis.optim_wrapper.optimizer.lr == 0.08
    assert lvis.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)
    assert lvis.train_cfg.max_iters == 45000
    assert lvis.param_scheduler[1].milestones == [30000, 40000]
    assert lvis.auto_scale_lr.base_batch_size == 64
    assert lvis.test_evaluator.type == 'LVISMetric'
