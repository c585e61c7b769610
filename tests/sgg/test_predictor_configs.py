"""Full-size VG150 configs of VCTree, Transformer and Causal TDE: built without data (on the
meta device), with SGB's settings, in all three modes; the effect switch and its hook."""
import os.path as osp
from types import SimpleNamespace

import pytest
import torch
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope

import ovkit.sgg  # noqa: F401
from ovkit.sgg.predictors.causal import CausalEffectHook
from tests.conftest import REPO

MODES = ('predcls', 'sgcls', 'sgdet')
METHODS = ('vctree', 'transformer', 'causal-motifs-sum-tde')


def load(method, mode, **options):
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'sgg', f'{method}_x101-fpn_{mode}_vg150.py'))
    if options:
        cfg.merge_from_dict(options)
    return cfg


def build(cfg):
    with DefaultScope.overwrite_default_scope('mmdet'), torch.device('meta'):
        return MODELS.build(cfg.model)


@pytest.mark.parametrize('method', METHODS)
@pytest.mark.parametrize('mode', MODES)
def test_full_size_configs_build_without_data(method, mode):
    cfg = load(method, mode)
    assert cfg.default_scope == 'mmdet' and 'ovkit.sgg' in cfg.custom_imports['imports']
    assert cfg.val_evaluator.mode == cfg.test_evaluator.mode == mode
    model = build(cfg)
    pred = model.relation_head.predictor
    assert model.mode == pred.mode == mode
    assert model.detector_checkpoint.endswith('.pth') and pred.glove_dir == 'data/glove'
    assert (pred.num_classes, pred.num_predicates, pred.embed_dim, pred.hidden_dim) == \
        (150, 50, 200, 512)
    if method == 'vctree':
        assert type(pred).__name__ == 'VCTreePredictor'
        assert pred.post_cat.out_features == 4096
        assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.12)
    elif method == 'transformer':
        enc = pred.context_layer.context_obj.encoder
        assert len(enc.layers) == 4 and len(pred.context_layer.context_edge.encoder.layers) == 2
        assert enc.layers[0].self_attn.num_heads == 8 and enc.layers[0].linear1.out_features \
            == 2048
        assert cfg.optim_wrapper.optimizer.lr == pytest.approx(0.016)
        assert cfg.train_cfg.max_iters == 16000 and cfg.train_dataloader.batch_size == 8
    else:
        assert (pred.context_type, pred.fusion_type, pred.effect_type) == ('motifs', 'sum', 'TDE')
        assert pred.spatial_for_vision
        hooks = [h['type'] for h in cfg.custom_hooks]
        assert hooks == ['SGGStatisticsHook', 'CausalEffectHook']


@pytest.mark.parametrize('effect', ['none', 'NIE', 'TE'])
def test_effect_type_is_a_config_switch(effect):
    cfg = load('causal-motifs-sum-tde', 'sgcls',
               **{'model.relation_head.predictor.effect_type': effect,
                  'model.relation_head.predictor.context_layer': 'vctree',
                  'model.relation_head.predictor.fusion_type': 'gate'})
    pred = build(cfg).relation_head.predictor
    assert (pred.effect_type, pred.context_type, pred.fusion_type) == (effect, 'vctree', 'gate')


def test_causal_effect_hook_validates_factual_tests_the_effect():
    pred = MODELS.build(dict(type='CausalAnalysisPredictor', mode='predcls', num_classes=3,
                             num_predicates=2, in_channels=4, union_channels=4, embed_dim=4,
                             hidden_dim=4, pooling_dim=4, effect_type='TDE'))
    runner = SimpleNamespace(model=SimpleNamespace(relation_head=SimpleNamespace(predictor=pred)))
    hook = CausalEffectHook(val_effect_type='none')
    hook.before_val_epoch(runner)
    assert pred.effect_type == 'none'
    hook.after_val_epoch(runner, {})
    assert pred.effect_type == 'TDE'
    with pytest.raises(ValueError, match='effect_type'):
        CausalEffectHook(val_effect_type='TIE')
