"""The VG150 configs build without data, with SGB's settings; the shapes configs match them."""
import copy
import glob
import os.path as osp

import numpy as np
import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope

import ovkit.sgg  # noqa: F401
from tests.conftest import REPO

CFG = osp.join(REPO, 'configs', 'sgg')
# Motifs and IMP (issue 14); VCTree / Transformer / Causal: tests/sgg/test_predictor_configs.py
VG150 = sorted(p for p in glob.glob(osp.join(CFG, '*_vg150.py'))
               if osp.basename(p).split('_')[0] in ('motifs', 'imp'))


def _build_on_meta(cfg):
    """Construct the model without allocating its ~350M parameters (nor reading any file)."""
    with DefaultScope.overwrite_default_scope('mmdet'), torch.device('meta'):
        return MODELS.build(cfg.model)


def test_every_mode_and_predictor_has_a_vg150_config():
    names = {osp.basename(p) for p in VG150}
    for method in ('motifs', 'imp'):
        for mode in ('predcls', 'sgcls', 'sgdet'):
            assert f'{method}_x101-fpn_{mode}_vg150.py' in names


@pytest.mark.parametrize('path', VG150, ids=osp.basename)
def test_vg150_config_builds_without_data_with_sgb_settings(path):
    cfg = Config.fromfile(path)
    method, _, mode, _ = osp.basename(path)[:-3].split('_')
    model = _build_on_meta(cfg)
    assert model.mode == mode == cfg.val_evaluator.mode == cfg.test_evaluator.mode
    predictor = model.relation_head.predictor
    assert type(predictor).__name__ == {'motifs': 'MotifsPredictor',
                                        'imp': 'IMPPredictor'}[method]
    # detector: X-101-32x8d FPN, 150 classes, SGDet box selection of SGB
    assert type(model.backbone).__name__ == 'ResNeXt' and model.backbone.depth == 101
    assert model.backbone.groups == 32 and model.backbone.base_width == 8
    assert model.roi_head.bbox_head.num_classes == 150
    rcnn = cfg.model.test_cfg.rcnn
    assert (rcnn.score_thr, rcnn.nms.iou_threshold, rcnn.max_per_img) == (0.01, 0.3, 80)
    assert cfg.model.detector_checkpoint  # a config key, loaded when training starts
    # head: 1024 pairs, 25% foreground, 4096-d MLPs, all-level union pooling
    head = model.relation_head
    assert (head.sampler.batch_size_per_image, head.sampler.positive_fraction) == (1024, 0.25)
    assert head.box_feature_extractor.out_channels == 4096
    assert type(head.union_feature_extractor.roi_extractor).__name__ == 'AllLevelsRoIExtractor'
    assert (head.num_classes, head.num_predicates) == (150, 50)
    if method == 'motifs':
        assert predictor.hidden_dim == 512 and predictor.embed_dim == 200
        assert predictor.glove_dir == cfg.glove_dir and predictor.use_bias
    # schedule: 12 images x lr 0.01, clip 5, plateau on val R@100 (IMP SGCls: SGB's 0.001)
    lr = cfg.optim_wrapper.optimizer.lr
    assert lr == pytest.approx(0.012 if (method, mode) == ('imp', 'sgcls') else 0.12)
    assert cfg.optim_wrapper.clip_grad.max_norm == 5.0
    assert cfg.train_dataloader.batch_size * 2 == cfg.auto_scale_lr.base_batch_size == 12
    assert cfg.param_scheduler[-1].type == 'ReduceOnPlateauLR'
    assert cfg.param_scheduler[-1].monitor == 'sgg/R@100'
    assert cfg.train_cfg.max_iters == 50000
    assert cfg.train_dataloader.dataset.type == 'VGSGGDataset'
    assert [cfg.train_dataloader.dataset.split, cfg.val_dataloader.dataset.split,
            cfg.test_dataloader.dataset.split] == ['train', 'val', 'test']
    assert {'type': 'SGGStatisticsHook'} in cfg.custom_hooks
    assert cfg.custom_imports.imports == ['ovkit.sgg']


def test_imp_slows_the_feature_mlps_as_sgb():
    cfg = Config.fromfile(osp.join(CFG, 'imp_x101-fpn_predcls_vg150.py'))
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    model = _build_on_meta(cfg)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    slowed = [n for n in names if any(k in n for k in keys)]
    # every parameter of the box MLP and of the union MLP (and its level-reducing conv)
    assert {n.split('.')[1] for n in slowed} == {'box_feature_extractor',
                                                  'union_feature_extractor'}
    assert not any('rect_conv' in n for n in slowed)
    assert all(v.lr_mult == 0.1 for v in keys.values())


def test_vg150_training_needs_the_detector_checkpoint(tmp_path):
    cfg = Config.fromfile(osp.join(CFG, 'motifs_x101-fpn_predcls_vg150.py'))
    cfg.model.detector_checkpoint = str(tmp_path / 'missing.pth')
    # a small detector suffices to check the error path of init_weights
    cfg.model.backbone.update(depth=50)
    cfg.model.relation_head.predictor.update(hidden_dim=8, pooling_dim=8, embed_dim=4)
    for key in ('box_feature_extractor', 'union_feature_extractor'):
        cfg.model.relation_head[key].mlp_dims = (8, 8)
    cfg.model.relation_head.statistics = dict(pred_dist=torch.zeros(151, 151, 51).numpy())
    cfg.model.relation_head.predictor.glove_dir = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    with pytest.raises(FileNotFoundError, match='model.detector_checkpoint'):
        model.init_weights()


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_shapes_configs_follow_the_vg150_ones(mode):
    tiny = Config.fromfile(osp.join(CFG, f'motifs_r18-fpn-tiny_{mode}_shapes-vg150.py'))
    full = Config.fromfile(osp.join(CFG, f'motifs_x101-fpn_{mode}_vg150.py'))
    assert tiny.model.mode == full.model.mode == tiny.test_evaluator.mode
    assert tiny.model.type == full.model.type == 'SceneGraphDetector'
    for key in ('box_feature_extractor', 'union_feature_extractor', 'sampler', 'predictor'):
        assert tiny.model.relation_head[key].type == full.model.relation_head[key].type
    assert tiny.train_dataloader.dataset.type == full.train_dataloader.dataset.type
    if mode != 'predcls':
        assert tiny.model.detector_checkpoint.endswith('iter_400.pth')


def test_imp_shapes_config_swaps_only_the_predictor():
    imp = Config.fromfile(osp.join(CFG, 'imp_r18-fpn-tiny_predcls_shapes-vg150.py'))
    motifs = Config.fromfile(osp.join(CFG, 'motifs_r18-fpn-tiny_predcls_shapes-vg150.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(copy.deepcopy(imp.model))  # mmdet's detectors edit their cfg
    assert type(model.relation_head.predictor).__name__ == 'IMPPredictor'
    assert model.relation_head.predictor.edge_unary.in_features == imp.mlp_dim == 64
    imp.model.relation_head.pop('predictor')
    motifs.model.relation_head.pop('predictor')
    assert imp.model == motifs.model and imp.train_cfg == motifs.train_cfg


@pytest.mark.filterwarnings('ignore:for .*copying from a non-meta')   # meta model: no copy
@pytest.mark.parametrize('mode', ['predcls', 'sgdet'])
def test_vg150_detector_uses_sgb_geometry_and_takes_a_converted_checkpoint(mode):
    """The converter's output (from a random maskrcnn-benchmark state dict with SGB's names and
    shapes) loads strictly into the detector the VG150 config builds, whose anchors, box coders
    and RoI level rule are maskrcnn-benchmark's (the geometry the converted weights need)."""
    from ovkit.sgg.convert_sgb_detector import convert
    from ovkit.sgg.sgb_geometry import (
        SGBAnchorGenerator,
        SGBDeltaXYWHBBoxCoder,
        SGBRoIExtractor,
        sgb_cell_anchors,
    )
    from tests.sgg.test_convert_sgb_detector import sgb_state_dict

    cfg = Config.fromfile(osp.join(CFG, f'motifs_x101-fpn_{mode}_vg150.py'))
    model = _build_on_meta(cfg)
    gen = model.rpn_head.prior_generator
    assert isinstance(gen, SGBAnchorGenerator)
    assert isinstance(model.rpn_head.bbox_coder, SGBDeltaXYWHBBoxCoder)
    assert isinstance(model.roi_head.bbox_head.bbox_coder, SGBDeltaXYWHBBoxCoder)
    assert model.roi_head.bbox_head.bbox_coder.weights == (10.0, 10.0, 5.0, 5.0)
    assert isinstance(model.roi_head.bbox_roi_extractor, SGBRoIExtractor)
    assert isinstance(model.relation_head.box_feature_extractor.roi_extractor, SGBRoIExtractor)
    for rpn in (cfg.model.test_cfg.rpn, cfg.model.train_cfg.rpn_proposal):
        assert rpn.nms.offset == 1 and rpn.min_bbox_size < 0
    assert cfg.model.test_cfg.rcnn.nms.offset == 1
    # the cell anchors the converter checks the checkpoint's against
    for lvl, (stride, size) in enumerate(zip([4, 8, 16, 32, 64], [32, 64, 128, 256, 512])):
        expect = sgb_cell_anchors(stride, [size], cfg.model.rpn_head.anchor_generator.ratios)
        np.testing.assert_array_equal(gen.base_anchors[lvl].numpy(), np.float32(expect))
    state, skipped = convert(sgb_state_dict(device='meta'))
    assert skipped == []
    model.load_detector_state(state, 'converted.pth')   # strict: every key, every shape
    state.pop('rpn_head.rpn_reg.bias')
    with pytest.raises(ValueError, match='rpn_head.rpn_reg.bias'):
        model.load_detector_state(state, 'converted.pth')
