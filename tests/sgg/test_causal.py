"""CausalAnalysisPredictor: TDE / NIE / TE and the factual output against the formulas
(numpy, from the module's weights), moving averages (training only, saved and restored),
shapes and gradients for every context and fusion."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.registry import DefaultScope
from mmengine.runner.checkpoint import load_checkpoint, save_checkpoint

import ovkit.sgg  # noqa: F401
from ovkit.sgg.predictors.causal import box_info, box_pair_info
from tests.sgg.model_helpers import NUM_CLASSES, NUM_PREDICATES, fake_proposals, fake_statistics

C1, P1 = NUM_CLASSES + 1, NUM_PREDICATES + 1
ROI, UNION = 12, 10
SIZES = (4, 3, 2)


def build(mode='sgcls', context='motifs', fusion='sum', **kw):
    cfg = dict(type='CausalAnalysisPredictor', mode=mode, num_classes=NUM_CLASSES,
               num_predicates=NUM_PREDICATES, in_channels=ROI, union_channels=UNION,
               context_layer=context, fusion_type=fusion, embed_dim=6, hidden_dim=8,
               pooling_dim=14, dropout=0.0, average_ratio=0.1)
    cfg.update(kw)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):  # an earlier test may leave another
        pred = MODELS.build(cfg)
    pred.load_statistics(fake_statistics())
    return pred


def inputs(mode, seed=0):
    torch.manual_seed(seed)
    props = fake_proposals(SIZES, mode=mode, seed=seed)
    pairs = [torch.tensor([(i, j) for i in range(n) for j in range(n) if i != j]) for n in SIZES]
    roi, union = torch.randn(sum(SIZES), ROI), torch.randn(20, UNION)
    binarys = []
    for n in SIZES:
        b = torch.zeros(n, n, dtype=torch.long)
        b[0, 1] = b[1, 0] = 1
        binarys.append(b)
    return props, pairs, roi, union, binarys


def averages(pred):
    return {n: b.clone() for n, b in pred.named_buffers() if 'untreated' in n}


def fill_averages(pred, seed=1):
    g = torch.Generator().manual_seed(seed)
    for name, buf in pred.named_buffers():
        if 'untreated' in name:
            buf.copy_(torch.randn(buf.shape, generator=g))


def numpy_weights(pred):
    f = pred.fusion
    as_np = lambda t: t.detach().double().numpy()
    w = dict(vis_w=as_np(f.vis_compress.weight), vis_b=as_np(f.vis_compress.bias),
             ctx_w=as_np(f.ctx_compress.weight),
             ctx_b=as_np(f.ctx_compress.bias) if f.ctx_compress.bias is not None else 0.0,
             freq=as_np(f.freq_bias.obj_baseline.weight))
    if pred.fusion_type == 'gate':
        w.update(gate_w=as_np(f.ctx_gate_fc.weight), gate_b=as_np(f.ctx_gate_fc.bias))
    return w


def y_formula(w, fusion, vis, ctx, probs):
    """y(x, z, p) from the formulas: soft frequency sum_ij p_s(i) p_o(j) W[i*(C+1)+j]."""
    frq = np.einsum('mi,mj,ijp->mp', probs[:, 0], probs[:, 1], w['freq'].reshape(C1, C1, P1))
    v = vis @ w['vis_w'].T + w['vis_b']
    c = ctx @ w['ctx_w'].T + w['ctx_b']
    if fusion == 'sum':
        return v + c + frq
    g = ctx @ w['gate_w'].T + w['gate_b']
    return c / (1.0 + np.exp(-(v + frq + g)))


def branch_inputs(pred, props, pairs, roi, union):
    """x, z, z-bar and the label distributions, from the predictor's own layers."""
    labels = pred.gt_labels(props)
    det = None if pred.mode == 'predcls' else pred.detector_logits(props)
    offsets = np.cumsum([0] + [len(p) for p in props][:-1])
    glob = torch.cat([pr + int(o) for pr, o in zip(pairs, offsets)])
    with torch.no_grad():
        z, hard, p, _, _ = pred.pair_features(roi, props, labels, det, glob)
        z_bar, _, p_bar, _, _ = pred.pair_features(roi, props, labels, det, glob,
                                                   ctx_average=True)
        boxes = box_info(props)
        z = z * pred.spt_emb(box_pair_info(boxes[glob[:, 0]], boxes[glob[:, 1]]))
        z_bar = z_bar * pred.spt_emb(pred.untreated_spt[None])
        x = pred.up_dim(union)
    d = lambda t: t.double().numpy()
    return d(x), d(z), d(z_bar), hard.numpy(), d(p), d(p_bar)


CASES = [('sgcls', c, f) for c in ('motifs', 'vctree', 'vtranse') for f in ('sum', 'gate')]


@pytest.mark.parametrize('mode,context,fusion', CASES + [('predcls', 'motifs', 'sum')])
def test_effects_and_factual_output_equal_the_formulas(mode, context, fusion):
    pred = build(mode, context, fusion)
    fill_averages(pred)
    pred.eval()
    props, pairs, roi, union, _ = inputs(mode)
    x, z, z_bar, hard, p, p_bar = branch_inputs(pred, props, pairs, roi, union)
    assert not np.allclose(z, z_bar)
    w = numpy_weights(pred)
    y = lambda zz, pp: y_formula(w, fusion, x, zz, pp)
    expect = dict(none=y(z, np.eye(C1)[hard]), TDE=y(z, p) - y(z_bar, p),
                  NIE=y(z_bar, p) - y(z_bar, p_bar), TE=y(z, p) - y(z_bar, p_bar))
    for effect, value in expect.items():
        pred.effect_type = effect
        with torch.no_grad():
            _, rel, _ = pred(props, pairs, roi, union)
        np.testing.assert_allclose(torch.cat(rel).double().numpy(), value, rtol=1e-4,
                                   atol=2e-5, err_msg=effect)
    if mode == 'predcls':
        # ground-truth labels are no counterfactual: p-bar = p, so NIE = 0 and TE = TDE (SGB)
        np.testing.assert_allclose(p, p_bar)
        np.testing.assert_allclose(expect['NIE'], 0, atol=1e-12)
    else:
        assert not np.allclose(p, p_bar)


def test_effect_none_is_the_factual_output_of_a_plain_run():
    """The factual logits do not depend on the averages; the effects do."""
    pred = build('sgcls', 'motifs', 'sum').eval()
    props, pairs, roi, union, _ = inputs('sgcls')
    with torch.no_grad():
        factual = torch.cat(pred(props, pairs, roi, union)[1])
        pred.effect_type = 'TDE'
        tde = torch.cat(pred(props, pairs, roi, union)[1])
        fill_averages(pred, seed=5)
        tde2 = torch.cat(pred(props, pairs, roi, union)[1])
        pred.effect_type = 'none'
        torch.testing.assert_close(torch.cat(pred(props, pairs, roi, union)[1]), factual)
    assert not torch.allclose(tde, tde2) and not torch.allclose(tde, factual)


@pytest.mark.parametrize('context', ['motifs', 'vctree', 'vtranse'])
def test_moving_averages_update_in_training_only_and_survive_save_load(context, tmp_path):
    pred = build('sgcls', context, 'sum', effect_type='TDE')
    props, pairs, roi, union, binarys = inputs('sgcls')
    start = averages(pred)
    assert start and all(torch.all(v == 0) for v in start.values())
    pred.train()
    rel_labels = [torch.randint(0, P1, (len(p),)) for p in pairs]
    pred(props, pairs, roi, union, rel_labels=rel_labels, rel_binarys=binarys)
    after = averages(pred)
    assert all(not torch.equal(after[n], start[n]) for n in start), after
    # untreated_spt = (1 - r) * 0 + r * mean of the pairs' 32 box numbers, r = 0.1
    boxes = box_info(props)
    offsets = np.cumsum([0] + list(SIZES)[:-1])
    glob = torch.cat([pr + int(o) for pr, o in zip(pairs, offsets)])
    spt = box_pair_info(boxes[glob[:, 0]], boxes[glob[:, 1]]).mean(0) * 0.1
    torch.testing.assert_close(after['untreated_spt'], spt)

    pred.eval()
    with torch.no_grad():
        pred(props, pairs, roi, union)
    assert all(torch.equal(v, after[n]) for n, v in averages(pred).items())

    path = str(tmp_path / 'causal.pth')
    save_checkpoint({'state_dict': pred.state_dict()}, path)
    fresh = build('sgcls', context, 'sum', effect_type='TDE')
    assert all(torch.all(v == 0) for v in averages(fresh).values())
    load_checkpoint(fresh, path, strict=True)
    assert all(torch.equal(v, after[n]) for n, v in averages(fresh).items())
    fresh.eval()
    with torch.no_grad():
        a = torch.cat(pred(props, pairs, roi, union)[1])
        b = torch.cat(fresh(props, pairs, roi, union)[1])
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize('mode,context,fusion', [
    ('predcls', 'motifs', 'sum'), ('sgdet', 'motifs', 'gate'), ('predcls', 'vctree', 'sum'),
    ('sgdet', 'vctree', 'sum'), ('predcls', 'vtranse', 'gate'), ('sgdet', 'vtranse', 'sum')])
def test_shapes_gradients_and_losses(mode, context, fusion):
    pred = build(mode, context, fusion).train()
    props, pairs, roi, union, binarys = inputs(mode)
    rel_labels = [torch.randint(0, P1, (len(p),)) for p in pairs]
    obj, rel, extra = pred(props, pairs, roi, union, rel_labels=rel_labels,
                           rel_binarys=binarys)
    assert [o.shape for o in obj] == [(n, C1) for n in SIZES]
    assert [r.shape for r in rel] == [(12, P1), (6, P1), (2, P1)]
    names = {'loss_aux_ctx'} | ({'loss_aux_vis', 'loss_aux_frq'} if fusion == 'sum' else set())
    names |= {'loss_vctree_binary'} if context == 'vctree' else set()
    assert set(extra) == names
    loss = F.cross_entropy(torch.cat(rel), torch.cat(rel_labels)) + sum(extra.values())
    if mode != 'predcls':
        loss = loss + F.cross_entropy(torch.cat(obj), torch.cat([p.labels for p in props]))
    loss.backward()
    missing = [n for n, p in pred.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient reaches {missing}'
    pred.eval()
    pred.effect_type = 'TDE'
    if mode == 'sgdet':
        for p in props:
            del p.labels
    with torch.no_grad():
        _, rel, extra = pred(props, pairs, roi, union)
    assert extra == {} and all(torch.isfinite(r).all() for r in rel)


def test_bad_switches_name_the_config_key():
    with pytest.raises(ValueError, match='predictor.effect_type'):
        build(effect_type='TIE')
    with pytest.raises(ValueError, match='predictor.context_layer'):
        build(context='imp')
    with pytest.raises(ValueError, match='fusion_type'):
        build(fusion='prod')
