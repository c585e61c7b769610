"""Causal TDE / NIE / TE and the moving averages, against the formulas written out in numpy."""
import numpy as np
import pytest
import torch

from ovkit.sgg.predictors.causal_effects import CausalFusion, update_moving_average

C1, P1, D, M = 4, 5, 6, 7    # classes+bg, predicates+bg, feature size, pairs


def fixed_fusion(fusion):
    """A tiny fusion module whose every weight is a fixed, hand-written number."""
    mod = CausalFusion(D, C1, P1, fusion=fusion).double()
    grid = np.arange(P1 * D, dtype=np.float64).reshape(P1, D)
    weights = dict(
        vis_w=np.sin(grid) * 0.5, vis_b=np.linspace(-0.2, 0.3, P1),
        ctx_w=np.cos(grid) * 0.4, ctx_b=np.linspace(0.1, -0.1, P1),
        gate_w=np.sin(grid * 0.7) * 0.3, gate_b=np.linspace(-0.05, 0.05, P1),
        freq=np.log(np.arange(1, C1 * C1 * P1 + 1, dtype=np.float64).reshape(C1 * C1, P1)
                    % 7 + 1) - 1.0)
    with torch.no_grad():
        mod.vis_compress.weight.copy_(torch.tensor(weights['vis_w']))
        mod.vis_compress.bias.copy_(torch.tensor(weights['vis_b']))
        mod.ctx_compress.weight.copy_(torch.tensor(weights['ctx_w']))
        mod.ctx_compress.bias.copy_(torch.tensor(weights['ctx_b']))
        mod.freq_bias.obj_baseline.weight.copy_(torch.tensor(weights['freq']))
        if fusion == 'gate':
            mod.ctx_gate_fc.weight.copy_(torch.tensor(weights['gate_w']))
            mod.ctx_gate_fc.bias.copy_(torch.tensor(weights['gate_b']))
    return mod, weights


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    vis, ctx, ctx_bar = (rng.normal(size=(M, D)) for _ in range(3))
    probs = rng.dirichlet(np.ones(C1), size=(M, 2))
    probs_bar = rng.dirichlet(np.ones(C1), size=(M, 2))
    return vis, ctx, ctx_bar, probs, probs_bar


def y_numpy(w, fusion, vis, ctx, probs):
    """y(x, z, p) straight from the paper's / SGB's formulas, one pair at a time."""
    out = np.zeros((M, P1))
    for m in range(M):
        frq = sum(probs[m, 0, i] * probs[m, 1, j] * w['freq'][i * C1 + j]
                  for i in range(C1) for j in range(C1))
        v = w['vis_w'] @ vis[m] + w['vis_b']
        c = w['ctx_w'] @ ctx[m] + w['ctx_b']
        if fusion == 'sum':
            out[m] = v + c + frq
        else:
            g = w['gate_w'] @ ctx[m] + w['gate_b']
            out[m] = c / (1 + np.exp(-(v + frq + g)))
    return out


@pytest.mark.parametrize('fusion', ['sum', 'gate'])
def test_effects_equal_the_formulas(fusion):
    mod, w = fixed_fusion(fusion)
    vis, ctx, ctx_bar, p, p_bar = inputs()
    t = [torch.tensor(a) for a in (vis, ctx, ctx_bar, p, p_bar)]
    y = lambda z, q: y_numpy(w, fusion, vis, z, q)
    expect = dict(TDE=y(ctx, p) - y(ctx_bar, p), NIE=y(ctx_bar, p) - y(ctx_bar, p_bar),
                  TE=y(ctx, p) - y(ctx_bar, p_bar))
    for effect, value in expect.items():
        got = mod.effect(effect, *t).detach().numpy()
        np.testing.assert_allclose(got, value, rtol=1e-10, atol=1e-12)
    # TE = TDE + NIE, and with the sum fusion TDE is the context branch alone
    np.testing.assert_allclose(expect['TE'], expect['TDE'] + expect['NIE'], atol=1e-12)
    if fusion == 'sum':
        np.testing.assert_allclose(expect['TDE'], (ctx - ctx_bar) @ w['ctx_w'].T, atol=1e-12)


@pytest.mark.parametrize('fusion', ['sum', 'gate'])
def test_factual_hard_labels_equal_one_hot_soft_lookup(fusion):
    mod, w = fixed_fusion(fusion)
    vis, ctx, _, _, _ = inputs(1)
    labels = np.random.default_rng(2).integers(0, C1, size=(M, 2))
    onehot = np.eye(C1)[labels]
    got = mod(torch.tensor(vis), torch.tensor(ctx),
              mod.frequency(pair_labels=torch.tensor(labels))).detach().numpy()
    np.testing.assert_allclose(got, y_numpy(w, fusion, vis, ctx, onehot), rtol=1e-10)


def test_effect_arguments_are_checked():
    mod, _ = fixed_fusion('sum')
    args = [torch.zeros(M, D, dtype=torch.double)] * 3 + \
        [torch.full((M, 2, C1), 1 / C1, dtype=torch.double)] * 2
    with pytest.raises(ValueError, match='effect_type'):
        mod.effect('TIE', *args)
    with pytest.raises(ValueError, match='fusion_type'):
        CausalFusion(D, C1, P1, fusion='mul')


def test_moving_average_formula_and_empty_batch():
    holder = torch.tensor([1.0, -2.0, 0.5])
    batches = [torch.tensor([[0.0, 1.0, 2.0], [4.0, 3.0, -2.0]]), torch.zeros(0, 3),
               torch.tensor([[10.0, 0.0, 1.0]])]
    expect = holder.numpy().astype(np.float64).copy()
    for b in batches:
        update_moving_average(holder, b, ratio=0.1)
        if len(b):
            expect = 0.9 * expect + 0.1 * b.numpy().mean(0)
    np.testing.assert_allclose(holder.numpy(), expect, rtol=1e-6)
    x = torch.ones(2, 3, requires_grad=True)
    update_moving_average(holder, x * 2, ratio=0.5)
    assert not holder.requires_grad
    with pytest.raises(ValueError, match='moving average'):
        update_moving_average(holder, torch.ones(2, 4), 0.1)
