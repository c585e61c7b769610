"""The arithmetic of Causal TDE (Tang et al., "Unbiased Scene Graph Generation from Biased
Training", CVPR 2020) as SGB computes it in ``CausalAnalysisPredictor``.

Three branches give predicate logits: the visual branch ``W_v x`` (x: union-box feature), the
context branch ``W_c z`` (z: the pair's context feature) and the frequency branch (the bias
table looked up with the pair's labels, or softly with its label distributions
``sum_ij p_s(i) p_o(j) W[i * (C+1) + j]``). They are fused by

- ``sum``:  ``y = W_v x + W_c z + f``;
- ``gate``: ``y = W_c z * sigmoid(W_v x + f + W_g z)``.

At test time the counterfactual replaces the context input by its training-time moving
average (``z-bar``, and the object distributions it implies, ``p-bar``); the visual input is
never replaced. With ``y(z, p)`` the fused logits from soft labels:

- ``TDE = y(z, p) - y(z-bar, p)``   (total direct effect of the context);
- ``NIE = y(z-bar, p) - y(z-bar, p-bar)``   (natural indirect effect, through the labels);
- ``TE  = y(z, p) - y(z-bar, p-bar)``   (total effect);
- ``none``: the factual logits with hard labels, as in training.

Moving averages: ``avg <- (1 - r) avg + r mean_batch(x)`` with SGB's ``r = 5e-4``, in training
only, on registered buffers so that the checkpoint keeps them.
"""
from typing import Optional

import torch
from torch import Tensor, nn

from .base import FrequencyBias, layer_init

EFFECT_TYPES = ('none', 'TDE', 'NIE', 'TE')
FUSION_TYPES = ('sum', 'gate')


def check_effect_type(effect_type: str) -> str:
    if effect_type not in EFFECT_TYPES:
        raise ValueError(f'`model.relation_head.predictor.effect_type` must be one of '
                         f'{EFFECT_TYPES}, got {effect_type!r}')
    return effect_type


@torch.no_grad()
def update_moving_average(holder: Tensor, inputs: Tensor, ratio: float) -> None:
    """``holder <- (1 - ratio) * holder + ratio * inputs.mean(0)``, in place, no gradient.

    Args:
        holder: [D] the running average (a buffer).
        inputs: [N, D] this batch's values; an empty batch leaves ``holder`` unchanged.
        ratio: the update ratio (SGB: 5e-4).
    """
    if inputs.dim() != 2 or inputs.shape[1] != holder.numel():
        raise ValueError(f'moving average of shape {tuple(holder.shape)} cannot take a batch of '
                         f'shape {tuple(inputs.shape)}')
    if inputs.shape[0] == 0:
        return
    holder.mul_(1.0 - ratio).add_(inputs.detach().mean(0).to(holder.dtype), alpha=ratio)


class CausalFusion(nn.Module):
    """Visual, context and frequency branches and their fusion (SGB ``calculate_logits``).

    Args:
        pooling_dim: size of the visual and context inputs.
        num_obj_cls: C+1 (background included), for the frequency table.
        num_rel_cls: P+1 (background included).
        fusion: 'sum' or 'gate'.
        ctx_bias: the context classifier has a bias (SGB: not with the VTransE context).
    """

    def __init__(self, pooling_dim: int, num_obj_cls: int, num_rel_cls: int,
                 fusion: str = 'sum', ctx_bias: bool = True):
        super().__init__()
        if fusion not in FUSION_TYPES:
            raise ValueError(f'`model.relation_head.predictor.fusion_type` must be one of '
                             f'{FUSION_TYPES}, got {fusion!r}')
        self.fusion = fusion
        self.vis_compress = nn.Linear(pooling_dim, num_rel_cls)
        self.ctx_compress = nn.Linear(pooling_dim, num_rel_cls, bias=ctx_bias)
        layer_init(self.vis_compress)
        if ctx_bias:
            layer_init(self.ctx_compress)
        if fusion == 'gate':
            self.ctx_gate_fc = nn.Linear(pooling_dim, num_rel_cls)
            layer_init(self.ctx_gate_fc)
        self.freq_bias = FrequencyBias(num_obj_cls, num_rel_cls)

    def frequency(self, pair_labels: Optional[Tensor] = None,
                  pair_probs: Optional[Tensor] = None) -> Tensor:
        """Frequency logits from hard pair labels [M, 2] or soft pair distributions
        [M, 2, C+1] (exactly one of them)."""
        if (pair_labels is None) == (pair_probs is None):
            raise ValueError('give either pair_labels or pair_probs')
        if pair_labels is not None:
            return self.freq_bias.index_with_labels(pair_labels.long())
        return self.freq_bias.index_with_probability(pair_probs)

    def forward(self, vis: Tensor, ctx: Tensor, frq: Tensor) -> Tensor:
        """Fused predicate logits [M, P+1] from the visual and context inputs [M, D] and the
        frequency logits [M, P+1]."""
        vis_dists = self.vis_compress(vis)
        ctx_dists = self.ctx_compress(ctx)
        if self.fusion == 'gate':
            return ctx_dists * torch.sigmoid(vis_dists + frq + self.ctx_gate_fc(ctx))
        return vis_dists + ctx_dists + frq

    def effect(self, effect_type: str, vis: Tensor, ctx: Tensor, ctx_bar: Tensor,
               pair_probs: Tensor, pair_probs_bar: Tensor) -> Tensor:
        """TDE / NIE / TE logits (see the module docstring); the visual input is kept.

        Args:
            effect_type: 'TDE', 'NIE' or 'TE'.
            vis: [M, D] visual input.
            ctx: [M, D] factual context input.
            ctx_bar: [M, D] counterfactual (averaged) context input.
            pair_probs: [M, 2, C+1] factual subject/object label distributions.
            pair_probs_bar: [M, 2, C+1] their counterfactual counterparts.
        """
        check_effect_type(effect_type)
        if effect_type == 'none':
            raise ValueError("effect_type 'none' has no counterfactual; use forward()")
        frq = self.frequency(pair_probs=pair_probs)
        if effect_type == 'TDE':
            return self(vis, ctx, frq) - self(vis, ctx_bar, frq)
        frq_bar = self.frequency(pair_probs=pair_probs_bar)
        if effect_type == 'NIE':
            return self(vis, ctx_bar, frq) - self(vis, ctx_bar, frq_bar)
        return self(vis, ctx, frq) - self(vis, ctx_bar, frq_bar)
