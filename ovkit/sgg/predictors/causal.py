"""Causal TDE's relation predictor (Tang et al., CVPR 2020) as SGB implements it
(``CausalAnalysisPredictor`` with ``SPATIAL_FOR_VISION``, the setting of its configs).

Context layer ``motifs`` | ``vctree`` | ``vtranse`` (a config switch), then three branches: the
visual one on the union feature, the context one on ``post_cat([head_s, tail_o])`` (VTransE:
``head_s - tail_o``) times an MLP of the pair's 32 box numbers, and the frequency one; fused by
``sum`` or ``gate`` (:mod:`.causal_effects`). Training adds auxiliary cross-entropies on the
context branch (and, with ``sum``, on the visual and frequency branches) and keeps moving
averages of the context inputs and of the pair box numbers as buffers. At test time
``effect_type`` = ``none`` | ``TDE`` | ``NIE`` | ``TE`` selects the factual logits or a causal
effect against the counterfactual run with those averages.

Not reproduced: SGB's ``SEPARATE_SPATIAL`` (off in its configs) and its unused
``avg_post_ctx`` / ``untreated_feat`` buffers.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import HOOKS, MODELS
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..glove import class_name_vectors
from .base import BaseRelationPredictor, encode_box_info, layer_init, to_onehot
from .causal_effects import CausalFusion, check_effect_type, update_moving_average
from .motifs import LSTMContext, centre_x_order, run_packed
from .vctree import VCTreeContext, binary_loss

CONTEXT_LAYERS = ('motifs', 'vctree', 'vtranse')


def box_info(proposals: Sequence[InstanceData]) -> Tensor:
    """[N, 8] x1, y1, x2, y2, cx, cy, w, h (+1 widths) over max(W, H, 100) of the image
    (SGB ``get_box_info(need_norm=True)``)."""
    out = []
    for p in proposals:
        b = p.bboxes
        wh = b[:, 2:] - b[:, :2] + 1.0
        info = torch.cat([b, b[:, :2] + 0.5 * wh, wh], dim=1)
        h, w = p.metainfo['img_shape'][:2]
        out.append(info / float(max(w, h, 100)))
    return torch.cat(out, dim=0)


def box_pair_info(sub: Tensor, obj: Tensor) -> Tensor:
    """[M, 32]: both boxes' 8 numbers, then those of their union and of their intersection
    (zero when they do not intersect), SGB ``get_box_pair_info``."""
    def info(boxes):
        wh = boxes[:, 2:] - boxes[:, :2] + 1.0
        return torch.cat([boxes, boxes[:, :2] + 0.5 * wh, wh], dim=1)

    union = torch.cat([torch.min(sub[:, :2], obj[:, :2]), torch.max(sub[:, 2:4], obj[:, 2:4])],
                      dim=1)
    inter = torch.cat([torch.max(sub[:, :2], obj[:, :2]), torch.min(sub[:, 2:4], obj[:, 2:4])],
                      dim=1)
    inter_info = info(inter)
    empty = (inter[:, 2] < inter[:, 0]) | (inter[:, 3] < inter[:, 1])
    inter_info = inter_info.masked_fill(empty[:, None], 0.0)
    return torch.cat([sub, obj, info(union), inter_info], dim=1)


def _make_fc(in_features: int, out_features: int) -> nn.Linear:
    """maskrcnn-benchmark ``make_fc``: kaiming-uniform (a=1) weight, zero bias."""
    fc = nn.Linear(in_features, out_features)
    nn.init.kaiming_uniform_(fc.weight, a=1)
    nn.init.constant_(fc.bias, 0)
    return fc


class CausalLSTMContext(LSTMContext):
    """Motifs' context (:class:`~.motifs.LSTMContext`) with Causal TDE's moving averages of
    the decoder input and of the edge input's [label embedding, RoI feature] part (SGB's
    ``LSTMContext`` with ``EFFECT_ANALYSIS``).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        num_obj_cls: C+1.
        obj_dim: RoI feature size.
        embed_dim: class embedding size.
        hidden_dim: LSTM size.
        dropout: decoder and inter-layer dropout.
        num_obj_layers: object BiLSTM layers.
        num_edge_layers: edge BiLSTM layers.
        later_nms_thr: SGDet test NMS of the decoder.
        average_ratio: update ratio of the moving averages.
        box_bn_momentum: momentum of the box embedding's BatchNorm (SGB 0.001).
    """

    def __init__(self, mode: str, num_obj_cls: int, obj_dim: int, embed_dim: int,
                 hidden_dim: int, dropout: float, num_obj_layers: int, num_edge_layers: int,
                 later_nms_thr: float, average_ratio: float = 5e-4,
                 box_bn_momentum: float = 0.001):
        super().__init__(mode, num_obj_cls, obj_dim, embed_dim, hidden_dim, dropout,
                         num_obj_layers, num_edge_layers, later_nms_thr)
        self.pos_embed[1].momentum = box_bn_momentum
        self.average_ratio = average_ratio
        self.register_buffer('untreated_dcd_feat',
                             torch.zeros(hidden_dim + obj_dim + embed_dim + 128))
        self.register_buffer('untreated_edg_feat', torch.zeros(embed_dim + obj_dim))

    def forward(self, roi_feats: Tensor, proposals: Sequence[InstanceData],
                labels: Optional[Tensor], detector_logits: Optional[Tensor],
                ctx_average: bool = False):
        """Returns object logits, labels, edge context and None (no pair scores)."""
        if self.mode == 'predcls':
            obj_embed = self.obj_embed1(labels)
        else:
            obj_embed = F.softmax(detector_logits, dim=1) @ self.obj_embed1.weight
        pos_embed = self.pos_embed(encode_box_info(proposals))
        obj_pre_rep = torch.cat([roi_feats, obj_embed, pos_embed], dim=-1)
        orders = centre_x_order(proposals)
        obj_ctx = self.lin_obj_h(run_packed(self.obj_ctx_rnn, obj_pre_rep, orders))
        counterfactual = ctx_average and not self.training
        if self.mode == 'predcls':
            obj_preds, obj_dists = labels, to_onehot(labels, self.num_obj_cls)
        else:
            decoder_inp = torch.cat([obj_pre_rep, obj_ctx], dim=-1)
            if self.training:
                update_moving_average(self.untreated_dcd_feat, decoder_inp, self.average_ratio)
            if counterfactual:
                decoder_inp = self.untreated_dcd_feat.expand_as(decoder_inp)
            boxes_per_cls = None
            if self.mode == 'sgdet' and not self.training:
                boxes_per_cls = [p.boxes_per_cls for p in proposals]
            obj_dists, obj_preds = self.decoder_rnn(
                decoder_inp, orders, labels=labels if self.training else None,
                boxes_per_cls=boxes_per_cls, nms_thr=self.later_nms_thr)
        label_roi = torch.cat([self.obj_embed2(obj_preds), roi_feats], dim=-1)
        if self.training:
            update_moving_average(self.untreated_edg_feat, label_roi, self.average_ratio)
        if counterfactual:
            label_roi = self.untreated_edg_feat.expand_as(label_roi)
        edge_rep = torch.cat([label_roi, obj_ctx], dim=-1)
        edge_ctx = self.lin_edge_h(run_packed(self.edge_ctx_rnn, edge_rep, orders))
        return obj_dists, obj_preds, edge_ctx, None


class VTransEContext(nn.Module):
    """VTransE's object and edge features (SGB ``VTransEFeature``): no recurrent context; an fc
    layer classifies objects from [RoI, class embedding, box embedding], another maps [RoI, box
    embedding, label embedding] to the edge feature. Moving averages of both inputs serve the
    counterfactual. Unlike SGB, PredCls uses the ground-truth labels here (SGB classifies the
    objects even in PredCls and feeds those labels to the frequency bias), as every other
    context does.

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        num_obj_cls: C+1.
        obj_dim: RoI feature size.
        embed_dim: class embedding size.
        hidden_dim: edge feature size.
        average_ratio: update ratio of the moving averages.
        box_bn_momentum: momentum of the box embedding's BatchNorm (SGB 0.001).
    """

    def __init__(self, mode: str, num_obj_cls: int, obj_dim: int, embed_dim: int,
                 hidden_dim: int, average_ratio: float = 5e-4, box_bn_momentum: float = 0.001):
        super().__init__()
        self.mode = mode
        self.num_obj_cls = num_obj_cls
        self.average_ratio = average_ratio
        self.obj_embed2 = nn.Embedding(num_obj_cls, embed_dim)
        self.pos_embed = nn.Sequential(nn.Linear(9, 32),
                                       nn.BatchNorm1d(32, momentum=box_bn_momentum),
                                       nn.Linear(32, 128), nn.ReLU(inplace=True))
        if mode != 'predcls':
            # the object classifier and its input (PredCls takes the ground-truth labels, so
            # these would get no gradient there)
            self.obj_embed1 = nn.Embedding(num_obj_cls, embed_dim)
            self.pred_layer = _make_fc(obj_dim + embed_dim + 128, num_obj_cls)
            self.register_buffer('untreated_obj_feat', torch.zeros(obj_dim + embed_dim + 128))
        self.fc_layer = _make_fc(obj_dim + embed_dim + 128, hidden_dim)
        self.register_buffer('untreated_edg_feat', torch.zeros(obj_dim + 128))

    def load_word_vectors(self, vectors: Tensor) -> None:
        """``vectors`` [C+2, embed_dim]: 'start', then the class names (background first)."""
        with torch.no_grad():
            self.obj_embed2.weight.copy_(vectors[1:])
            if hasattr(self, 'obj_embed1'):
                self.obj_embed1.weight.copy_(vectors[1:])

    def forward(self, roi_feats: Tensor, proposals: Sequence[InstanceData],
                labels: Optional[Tensor], detector_logits: Optional[Tensor],
                ctx_average: bool = False, commit=None):
        pos_embed = self.pos_embed(encode_box_info(proposals))
        roi_pos = torch.cat([roi_feats, pos_embed], dim=-1)
        if self.training:
            update_moving_average(self.untreated_edg_feat, roi_pos, self.average_ratio)
        counterfactual = ctx_average and not self.training
        if self.mode == 'predcls':
            obj_preds, obj_dists = labels, to_onehot(labels, self.num_obj_cls)
        else:
            obj_embed = F.softmax(detector_logits, dim=1) @ self.obj_embed1.weight
            obj_pre_rep = torch.cat([roi_feats, obj_embed, pos_embed], dim=-1)
            if self.training:
                update_moving_average(self.untreated_obj_feat, obj_pre_rep, self.average_ratio)
            if counterfactual:
                obj_pre_rep = self.untreated_obj_feat.expand_as(obj_pre_rep)
            obj_dists = self.pred_layer(obj_pre_rep)
            if self.training or commit is None:
                obj_preds = obj_dists[:, 1:].argmax(1) + 1
            else:
                obj_preds = commit(proposals, obj_dists)
        if counterfactual:
            label_embed = F.softmax(obj_dists, dim=1) @ self.obj_embed2.weight
            rel_rep = torch.cat([self.untreated_edg_feat.expand_as(roi_pos), label_embed], -1)
        else:
            rel_rep = torch.cat([roi_pos, self.obj_embed2(obj_preds.long())], dim=-1)
        return obj_dists, obj_preds, F.relu(self.fc_layer(rel_rep)), None


@MODELS.register_module()
class CausalAnalysisPredictor(BaseRelationPredictor):
    """Causal TDE relation predictor (SGB ``CausalAnalysisPredictor``).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet' (set by the detector).
        num_classes: C.
        num_predicates: P.
        in_channels: box feature size.
        union_channels: union feature size.
        context_layer: 'motifs' | 'vctree' | 'vtranse' (SGB ``CAUSAL.CONTEXT_LAYER``).
        fusion_type: 'sum' | 'gate' (SGB ``CAUSAL.FUSION_TYPE``).
        effect_type: test-time output, 'none' | 'TDE' | 'NIE' | 'TE' (SGB
            ``CAUSAL.EFFECT_TYPE``); training always uses the factual logits.
        spatial_for_vision: multiply the context feature by an MLP of the pair's box numbers
            (SGB ``CAUSAL.SPATIAL_FOR_VISION``, on in its configs).
        glove_dir: folder with ``glove.6B.<embed_dim>d.txt``; None = random class vectors.
        embed_dim: class embedding size.
        hidden_dim: context size.
        pooling_dim: size of the visual and context branch inputs.
        dropout: context dropout.
        num_obj_layers: object context layers (motifs, vctree).
        num_edge_layers: edge context layers (motifs, vctree).
        average_ratio: update ratio of the moving averages (SGB 5e-4).
        loss_aux_weight: weight of the auxiliary branch losses.
        loss_binary_weight: weight of VCTree's tree score loss (context ``vctree``).
        later_nms_thr: SGDet test label NMS.
        box_bn_momentum: momentum of the context's box-embedding BatchNorms (SGB: 0.001,
            running statistics over ~1000 iterations; short schedules need more).
        init_cfg: mmengine init config.
    """
    uses_statistics = True
    uses_word_vectors = True

    def __init__(self, mode: str, num_classes: int, num_predicates: int, in_channels: int,
                 union_channels: int, context_layer: str = 'motifs', fusion_type: str = 'sum',
                 effect_type: str = 'none', spatial_for_vision: bool = True,
                 glove_dir: Optional[str] = None, embed_dim: int = 200, hidden_dim: int = 512,
                 pooling_dim: int = 4096, dropout: float = 0.2, num_obj_layers: int = 1,
                 num_edge_layers: int = 1, average_ratio: float = 5e-4,
                 loss_aux_weight: float = 1.0, loss_binary_weight: float = 1.0,
                 later_nms_thr: float = 0.5, box_bn_momentum: float = 0.001,
                 init_cfg: Optional[dict] = None):
        super().__init__(mode, num_classes, num_predicates, in_channels, union_channels,
                         later_nms_thr=later_nms_thr, init_cfg=init_cfg)
        if context_layer not in CONTEXT_LAYERS:
            raise ValueError(f'`model.relation_head.predictor.context_layer` must be one of '
                             f'{CONTEXT_LAYERS}, got {context_layer!r}')
        self.context_type = context_layer
        self.fusion_type = fusion_type
        self.effect_type = check_effect_type(effect_type)
        self.spatial_for_vision = spatial_for_vision
        self.glove_dir = glove_dir
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.average_ratio = average_ratio
        self.loss_aux_weight = loss_aux_weight
        self.loss_binary_weight = loss_binary_weight
        if context_layer == 'motifs':
            self.context_layer = CausalLSTMContext(
                self.mode, self.num_obj_cls, in_channels, embed_dim, hidden_dim, dropout,
                num_obj_layers, num_edge_layers, later_nms_thr, average_ratio, box_bn_momentum)
        elif context_layer == 'vctree':
            self.context_layer = VCTreeContext(
                self.mode, self.num_obj_cls, in_channels, embed_dim, hidden_dim, dropout,
                num_obj_layers, num_edge_layers, effect_analysis=True,
                average_ratio=average_ratio, box_bn_momentum=box_bn_momentum)
        else:
            self.context_layer = VTransEContext(self.mode, self.num_obj_cls, in_channels,
                                                embed_dim, hidden_dim, average_ratio,
                                                box_bn_momentum)
        vtranse = context_layer == 'vtranse'
        self.edge_dim = pooling_dim if vtranse else hidden_dim
        self.post_emb = nn.Linear(hidden_dim, self.edge_dim * 2)
        layer_init(self.post_emb, std=10.0 * (1.0 / hidden_dim) ** 0.5)
        if not vtranse:
            self.post_cat = nn.Sequential(nn.Linear(hidden_dim * 2, pooling_dim),
                                          nn.ReLU(inplace=True))
            layer_init(self.post_cat[0])
        self.fusion = CausalFusion(pooling_dim, self.num_obj_cls, self.num_rel_cls,
                                   fusion=fusion_type, ctx_bias=not vtranse)
        if pooling_dim != union_channels:
            self.up_dim = nn.Linear(union_channels, pooling_dim)
            layer_init(self.up_dim)
        if spatial_for_vision:
            self.spt_emb = nn.Sequential(nn.Linear(32, hidden_dim), nn.ReLU(inplace=True),
                                         nn.Linear(hidden_dim, pooling_dim),
                                         nn.ReLU(inplace=True))
            layer_init(self.spt_emb[0])
            layer_init(self.spt_emb[2])
            self.register_buffer('untreated_spt', torch.zeros(32))

    def load_statistics(self, statistics: dict) -> None:
        self.fusion.freq_bias.load_pred_dist(statistics['pred_dist'])
        if isinstance(self.context_layer, VCTreeContext):
            self.context_layer.load_statistics(statistics)

    def load_word_vectors(self, obj_classes: Sequence[str], glove_dir: Optional[str],
                          key: str) -> None:
        vectors = class_name_vectors(['start'] + list(obj_classes), glove_dir,
                                     dim=self.embed_dim, key=key)
        self.context_layer.load_word_vectors(vectors)

    # -- pieces -----------------------------------------------------------------------------
    def _context(self, roi_feats, proposals, labels, det_logits, ctx_average):
        if isinstance(self.context_layer, VTransEContext):
            return self.context_layer(roi_feats, proposals, labels, det_logits,
                                      ctx_average=ctx_average, commit=self.commit_labels)
        return self.context_layer(roi_feats, proposals, labels, det_logits,
                                  ctx_average=ctx_average)

    def pair_features(self, roi_feats, proposals, labels, det_logits, glob: Tensor,
                      ctx_average: bool = False):
        """Context feature of every pair, its hard labels [M, 2] and label distributions
        [M, 2, C+1], the object logits and (VCTree) the pair scores."""
        obj_dists, obj_preds, edge_ctx, bi_preds = self._context(
            roi_feats, proposals, labels, det_logits, ctx_average)
        edge_rep = self.post_emb(edge_ctx).view(-1, 2, self.edge_dim)
        head, tail = edge_rep[glob[:, 0], 0], edge_rep[glob[:, 1], 1]
        if self.context_type == 'vtranse':
            post_ctx = head - tail
        else:
            post_ctx = self.post_cat(torch.cat([head, tail], dim=-1))
        obj_prob = F.softmax(obj_dists, dim=-1)
        pair_probs = torch.stack([obj_prob[glob[:, 0]], obj_prob[glob[:, 1]]], dim=1)
        return post_ctx, obj_preds[glob].long(), pair_probs, obj_dists, bi_preds

    def forward(self, proposals, rel_pairs, roi_feats, union_feats, rel_labels=None,
                rel_binarys=None):
        labels = self.gt_labels(proposals)
        if self.mode == 'predcls' and labels is None:
            raise KeyError('predcls: proposals need ground-truth `labels`')
        det_logits = None if self.mode == 'predcls' else self.detector_logits(proposals)
        num_objs = [len(p) for p in proposals]
        offsets = torch.tensor([0] + num_objs[:-1], device=roi_feats.device).cumsum(0)
        glob = torch.cat([pairs + off for pairs, off in zip(rel_pairs, offsets)], dim=0)

        post_ctx, pair_pred, pair_probs, obj_dists, bi_preds = self.pair_features(
            roi_feats, proposals, labels, det_logits, glob)
        if self.spatial_for_vision:
            boxes = box_info(proposals)
            pair_bbox = box_pair_info(boxes[glob[:, 0]], boxes[glob[:, 1]])
            post_ctx = post_ctx * self.spt_emb(pair_bbox)
        union = self.up_dim(union_feats) if hasattr(self, 'up_dim') else union_feats
        fusion = self.fusion
        rel_dists = fusion(union, post_ctx, fusion.frequency(pair_labels=pair_pred))

        extra = {}
        if self.training:
            targets = torch.cat(rel_labels)
            w = self.loss_aux_weight
            if bi_preds is not None:
                if rel_binarys is None:
                    raise KeyError('the vctree context needs `rel_binarys` in training; the '
                                   'RelationHead passes them')
                extra['loss_vctree_binary'] = self.loss_binary_weight * binary_loss(
                    bi_preds, rel_binarys)
            extra['loss_aux_ctx'] = w * F.cross_entropy(fusion.ctx_compress(post_ctx), targets)
            if self.fusion_type == 'sum':
                extra['loss_aux_vis'] = w * F.cross_entropy(fusion.vis_compress(union), targets)
                extra['loss_aux_frq'] = w * F.cross_entropy(
                    fusion.frequency(pair_labels=pair_pred), targets)
            if self.spatial_for_vision:
                update_moving_average(self.untreated_spt, pair_bbox, self.average_ratio)
        elif self.effect_type != 'none':
            with torch.no_grad():
                avg_ctx, _, avg_probs, _, _ = self.pair_features(
                    roi_feats, proposals, labels, det_logits, glob, ctx_average=True)
                if self.spatial_for_vision:
                    avg_ctx = avg_ctx * self.spt_emb(self.untreated_spt[None])
                rel_dists = fusion.effect(self.effect_type, union, post_ctx, avg_ctx,
                                          pair_probs, avg_probs)
        return (list(obj_dists.split(num_objs)),
                list(rel_dists.split([len(p) for p in rel_pairs])), extra)


@HOOKS.register_module()
class CausalEffectHook(Hook):
    """Validate with one effect type while training, test with the config's.

    SGB trains and validates Causal models with ``EFFECT_TYPE none`` (so the best checkpoint
    is chosen on the factual output) and tests the same checkpoint with TDE. With this hook a
    TDE config (``effect_type='TDE'``) does the same under one config: the validation loops of
    a training run use ``val_effect_type``, ``tools/test.py`` uses the model's own.

    Args:
        val_effect_type: effect type of the validation loops ('none' as SGB).
    """
    priority = 'NORMAL'

    def __init__(self, val_effect_type: str = 'none') -> None:
        self.val_effect_type = check_effect_type(val_effect_type)
        self._saved = None

    @staticmethod
    def _predictor(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        head = getattr(model, 'relation_head', None)
        pred = getattr(head, 'predictor', None)
        return pred if isinstance(pred, CausalAnalysisPredictor) else None

    def before_val_epoch(self, runner) -> None:
        pred = self._predictor(runner)
        if pred is not None:
            self._saved = pred.effect_type
            pred.effect_type = self.val_effect_type

    def after_val_epoch(self, runner, metrics=None) -> None:
        pred = self._predictor(runner)
        if pred is not None and self._saved is not None:
            pred.effect_type = self._saved
            self._saved = None
