"""Every issue-9 predictor and effect type runs from its shapes config in all three modes: the
config builds, one training step gives finite losses whose gradients reach every trainable
part of the relation head, and one prediction follows the interface (for Causal: with every
effect type, and the context layer and fusion set by config options). Tiny random models,
hand-built batches, no data files."""
import copy
import functools
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from ovkit.shapes import SHAPE_CLASSES, SHAPE_PREDICATES
from tests.conftest import REPO
from tests.sgg.model_helpers import build_in_mmdet_scope, fake_batch, fake_statistics

CFG = osp.join(REPO, 'configs', 'sgg')
MODES = ('predcls', 'sgcls', 'sgdet')
METHODS = ('vctree', 'transformer', 'causal-motifs-sum-tde')
EFFECTS = ('none', 'TDE', 'NIE', 'TE')
P1 = len(SHAPE_PREDICATES) + 1
EXTRA_LOSSES = {'vctree': {'loss_vctree_binary'}, 'transformer': set(),
                'causal-motifs-sum-tde': {'loss_aux_ctx', 'loss_aux_vis', 'loss_aux_frq'}}


@functools.lru_cache(maxsize=None)
def load(method, mode):
    # parsing a config with mmdet:: bases takes about a second: once per file
    return Config.fromfile(osp.join(CFG, f'{method}_r18-fpn-tiny_{mode}_shapes-vg150.py'))


def build(method, mode, **options):
    """The model of ``configs/sgg/{method}_r18-fpn-tiny_{mode}_shapes-vg150.py`` with a random
    detector and made-up statistics (what the tiny detector checkpoint / the hook would give)."""
    cfg = copy.deepcopy(load(method, mode))
    assert cfg.model.mode == cfg.test_evaluator.mode == mode
    cfg.merge_from_dict(dict(options, **{'model.detector_checkpoint': None}))
    cfg.model.relation_head.statistics = fake_statistics(len(SHAPE_CLASSES),
                                                         len(SHAPE_PREDICATES))
    torch.manual_seed(0)
    model = build_in_mmdet_scope(cfg.model)
    model.init_weights()
    return model


def check_predictions(model, mode):
    inputs, samples = fake_batch(model, training=False)
    with torch.no_grad():
        out = model.predict(inputs, samples)
    scores = []
    for s in out:
        inst, rels = s.pred_instances, s.pred_relations
        n, m = len(inst), len(rels)
        assert rels.pairs.shape == (m, 2) and rels.scores.shape == (m, P1)
        assert (rels.pairs < n).all() and torch.isfinite(rels.scores).all()
        torch.testing.assert_close(rels.scores.sum(1), torch.ones(m))
        assert torch.equal(rels.labels, rels.scores[:, 1:].argmax(1) + 1)
        if mode != 'sgdet':
            assert m == n * (n - 1)
        scores.append(rels.scores)
    return out, scores


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('method', METHODS)
def test_config_trains_one_step_and_predicts(method, mode):
    model = build(method, mode).train()
    inputs, samples = fake_batch(model)
    losses = model.loss(inputs, samples)
    expect = {'loss_rel'} | EXTRA_LOSSES[method]
    if mode != 'predcls':
        expect.add('loss_refine_obj')
    assert set(losses) == expect
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.relation_head.named_parameters()
               if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient reaches {missing}'
    check_predictions(model.eval(), mode)


@pytest.mark.parametrize('mode', MODES)
def test_causal_effect_types_from_the_config_in_every_mode(mode):
    model = build('causal-motifs-sum-tde', mode,
                  **{'model.relation_head.predictor.effect_type': 'NIE'}).eval()
    pred = model.relation_head.predictor
    assert pred.effect_type == 'NIE'
    # moving averages as after some training, so that the counterfactual input is not zero
    g = torch.Generator().manual_seed(1)
    for name, buf in pred.named_buffers():
        if 'untreated' in name:
            buf.copy_(torch.randn(buf.shape, generator=g))
    scores = {}
    for effect in EFFECTS:
        pred.effect_type = effect  # what CausalEffectHook / --cfg-options switch
        _, scores[effect] = check_predictions(model, mode)
    flat = {e: torch.cat(s) for e, s in scores.items()}
    assert not torch.allclose(flat['TDE'], flat['none'])
    if mode == 'predcls':
        # ground-truth labels: p-bar = p, so NIE is zero (uniform softmax) and TE equals TDE
        torch.testing.assert_close(flat['NIE'], torch.full_like(flat['NIE'], 1.0 / P1))
        torch.testing.assert_close(flat['TE'], flat['TDE'])
    else:
        assert not torch.allclose(flat['TE'], flat['TDE'])


# (every context x fusion x mode runs at the predictor level in test_causal.py)
@pytest.mark.parametrize('context,fusion', [('vctree', 'gate'), ('vtranse', 'sum')])
def test_causal_context_and_fusion_switches_from_the_config(context, fusion):
    model = build('causal-motifs-sum-tde', 'sgcls',
                  **{'model.relation_head.predictor.context_layer': context,
                     'model.relation_head.predictor.fusion_type': fusion}).train()
    pred = model.relation_head.predictor
    assert (pred.context_type, pred.fusion_type) == (context, fusion)
    inputs, samples = fake_batch(model)
    losses = model.loss(inputs, samples)
    assert 'loss_aux_ctx' in losses and ('loss_aux_vis' in losses) == (fusion == 'sum')
    assert ('loss_vctree_binary' in losses) == (context == 'vctree')
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in pred.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient reaches {missing}'
    check_predictions(model.eval(), 'sgcls')
