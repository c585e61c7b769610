"""VCTree (Tang et al., "Learning to Compose Dynamic Tree Structures for Visual Contexts",
CVPR 2019) as SGB implements it (``model_vctree.py``, ``VCTreePredictor``).

Per image, a score net rates every box pair (a learned co-occurrence prior of the two label
distributions, gated by a visual prior); a maximum spanning tree of the scores is turned into
a binary tree; bidirectional binary TreeLSTMs over it give the object context, a TreeLSTM
decoder (outside PredCls) the object labels, and a second BiTreeLSTM the edge context.
Predicates: ``ctx_compress(post_cat([head_s, tail_o]) * union) + freq``. The tree is discrete;
the score net learns from an auxiliary binary cross-entropy against "the pair is related"
(``loss_vctree_binary``, SGB's ``binary_loss``).
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.structures import InstanceData
from torch import Tensor, nn

from ..glove import class_name_vectors
from .base import BaseRelationPredictor, FrequencyBias, encode_box_info, layer_init, to_onehot
from .causal_effects import update_moving_average
from .treelstm import BiTreeLSTM, TreeLSTMDecoder, max_spanning_tree, to_binary_forest

IM_SCALE = 1024.0


def overlap_info(proposals: Sequence[InstanceData]) -> Tensor:
    """Six overlap numbers per box (SGB ``get_overlap_info``; +1 widths, self included):
    #boxes it intersects, their summed intersection / 1024^2, summed IoU, the two sums divided
    by the count, and its own area / 1024^2."""
    out = []
    for p in proposals:
        b = p.bboxes
        lt = torch.max(b[:, None, :2], b[None, :, :2])
        rb = torch.min(b[:, None, 2:], b[None, :, 2:])
        inter = (rb - lt + 1.0).clamp(min=0).prod(-1)
        area1 = (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
        iou = inter / (area1[:, None] + area1[None, :] - inter + 1e-9)
        area = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[:, None]
        count = (inter > 0).float().sum(1, keepdim=True)
        inter_sum = inter.sum(1, keepdim=True) / IM_SCALE ** 2
        iou_sum = iou.sum(1, keepdim=True)
        out.append(torch.cat([count, inter_sum, iou_sum, inter_sum / (count + 1e-9),
                              iou_sum / (count + 1e-9), area / IM_SCALE ** 2], dim=1))
    return torch.cat(out, dim=0)


class VCTreeContext(nn.Module):
    """Object and edge context of VCTree (SGB ``VCTreeLSTMContext``).

    With ``effect_analysis`` it also keeps, as buffers, the moving averages of the decoder
    input and of the edge input's [label embedding, RoI feature] part, and replaces them by
    these averages when called with ``ctx_average=True`` (Causal TDE's counterfactual).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        num_obj_cls: C+1.
        obj_dim: RoI feature size.
        embed_dim: class embedding size.
        hidden_dim: context size.
        dropout: TreeLSTM dropout.
        num_obj_layers: object BiTreeLSTM layers.
        num_edge_layers: edge BiTreeLSTM layers.
        effect_analysis: keep the moving averages (the causal predictor).
        average_ratio: their update ratio.
        box_bn_momentum: momentum of the box / overlap embeddings' BatchNorms (SGB 0.001).
    """

    def __init__(self, mode: str, num_obj_cls: int, obj_dim: int, embed_dim: int,
                 hidden_dim: int, dropout: float, num_obj_layers: int = 1,
                 num_edge_layers: int = 1, effect_analysis: bool = False,
                 average_ratio: float = 5e-4, box_bn_momentum: float = 0.001):
        super().__init__()
        self.mode = mode
        self.num_obj_cls = num_obj_cls
        self.effect_analysis = effect_analysis
        self.average_ratio = average_ratio
        self.obj_embed1 = nn.Embedding(num_obj_cls, embed_dim)
        self.obj_embed2 = nn.Embedding(num_obj_cls, embed_dim)
        bn = box_bn_momentum
        self.pos_embed = nn.Sequential(nn.Linear(9, 32), nn.BatchNorm1d(32, momentum=bn),
                                       nn.Linear(32, 128), nn.ReLU(inplace=True))
        self.overlap_embed = nn.Sequential(nn.Linear(6, 128), nn.BatchNorm1d(128, momentum=bn),
                                           nn.ReLU(inplace=True))
        self.box_embed = nn.Sequential(nn.Linear(9, 128), nn.BatchNorm1d(128, momentum=bn),
                                       nn.ReLU(inplace=True))
        # pair score net: co-occurrence prior of the label distributions x a visual prior
        self.bi_freq_prior = nn.Linear(num_obj_cls * num_obj_cls, 1, bias=False)
        self.obj_reduce = nn.Linear(obj_dim, 128)
        self.emb_reduce = nn.Linear(embed_dim, 128)
        self.score_pre = nn.Linear(128 * 4, hidden_dim)
        self.score_sub = nn.Linear(hidden_dim, hidden_dim)
        self.score_obj = nn.Linear(hidden_dim, hidden_dim)
        self.vision_prior = nn.Linear(hidden_dim * 3 + 1, 1)
        for lin in (self.obj_reduce, self.emb_reduce, self.score_pre, self.score_sub,
                    self.score_obj):
            layer_init(lin)
        obj_in = obj_dim + embed_dim + 128
        self.obj_ctx_rnn = BiTreeLSTM(obj_in, hidden_dim, num_obj_layers,
                                      dropout if num_obj_layers > 1 else 0.0)
        self.decoder_dim = hidden_dim + obj_in
        if mode != 'predcls':
            # PredCls labels are the ground truth: no decoder (every parameter must get a
            # gradient under DDP)
            self.decoder_rnn = TreeLSTMDecoder(num_obj_cls, embed_dim, self.decoder_dim,
                                               hidden_dim, dropout)
        self.edge_ctx_rnn = BiTreeLSTM(embed_dim + obj_dim + hidden_dim, hidden_dim,
                                       num_edge_layers,
                                       dropout if num_edge_layers > 1 else 0.0)
        if effect_analysis:
            self.register_buffer('untreated_dcd_feat', torch.zeros(self.decoder_dim))
            self.register_buffer('untreated_edg_feat', torch.zeros(embed_dim + obj_dim))

    def load_word_vectors(self, vectors: Tensor) -> None:
        """``vectors`` [C+2, embed_dim]: 'start', then the class names (background first)."""
        with torch.no_grad():
            self.obj_embed1.weight.copy_(vectors[1:])
            self.obj_embed2.weight.copy_(vectors[1:])
            if hasattr(self, 'decoder_rnn'):
                self.decoder_rnn.obj_embed.weight.copy_(vectors)

    def load_statistics(self, statistics: dict) -> None:
        """The co-occurrence prior starts from the summed log-frequencies of both orders."""
        pred_dist = torch.as_tensor(statistics['pred_dist'], dtype=torch.float32)
        co = pred_dist.sum(-1)
        co = co + co.t()
        if co.numel() != self.bi_freq_prior.weight.numel():
            raise ValueError(f'frequency statistics of shape {tuple(pred_dist.shape)} do not '
                             f'fit {self.num_obj_cls} object classes (incl. background)')
        with torch.no_grad():
            self.bi_freq_prior.weight.copy_(co.reshape(1, -1))

    def pair_scores(self, num_objs: Sequence[int], score_inp: Tensor,
                    obj_dist: Tensor) -> List[Tensor]:
        """Per image [N, N] pair logits (SGB ``vctree_score_net``): entry (i, j) reads the
        object part of box i and the subject part of box j."""
        probs = F.softmax(obj_dist.detach(), dim=-1)
        feat = F.relu(self.score_pre(score_inp))
        sub, obj = F.relu(self.score_sub(feat)), F.relu(self.score_obj(feat))
        out = []
        for s, o, p in zip(sub.split(num_objs), obj.split(num_objs), probs.split(num_objs)):
            n = s.shape[0]
            joint = (p[:, None, :, None] * p[None, :, None, :]).reshape(n * n, -1)
            co = self.bi_freq_prior(joint).view(n, n)
            s_ij = s[None].expand(n, n, -1)
            o_ij = o[:, None].expand(n, n, -1)
            vis = self.vision_prior(torch.cat([s_ij * o_ij, s_ij, o_ij, co[..., None]], -1))
            out.append(torch.sigmoid(vis[..., 0]) * co)
        return out

    def forward(self, roi_feats: Tensor, proposals: Sequence[InstanceData],
                labels: Optional[Tensor], detector_logits: Optional[Tensor],
                ctx_average: bool = False):
        """Returns object logits [N, C+1], labels [N], edge context [N, hidden] and the
        per-image pair logits (the auxiliary loss's inputs)."""
        num_objs = [len(p) for p in proposals]
        if self.mode == 'predcls':
            obj_logits = to_onehot(labels, self.num_obj_cls)
            obj_embed = self.obj_embed1(labels)
        else:
            obj_logits = detector_logits
            obj_embed = F.softmax(detector_logits, dim=1) @ self.obj_embed1.weight
        box_info = encode_box_info(proposals)
        obj_pre_rep = torch.cat([roi_feats, obj_embed, self.pos_embed(box_info)], dim=-1)

        score_inp = torch.cat([self.obj_reduce(roi_feats.detach()),
                               self.emb_reduce(obj_embed.detach()), self.box_embed(box_info),
                               self.overlap_embed(overlap_info(proposals))], dim=-1)
        bi_preds = self.pair_scores(num_objs, score_inp, obj_logits)
        trees = [max_spanning_tree(torch.sigmoid(b).detach().cpu().numpy()) for b in bi_preds]
        forest = to_binary_forest(trees, device=roi_feats.device)

        obj_ctx = self.obj_ctx_rnn(forest, obj_pre_rep)
        counterfactual = ctx_average and self.effect_analysis and not self.training
        if self.mode == 'predcls':
            obj_dists, obj_preds = obj_logits, labels
        else:
            decoder_inp = torch.cat([obj_pre_rep, obj_ctx], dim=-1)
            if self.training and self.effect_analysis:
                update_moving_average(self.untreated_dcd_feat, decoder_inp, self.average_ratio)
            if counterfactual:
                decoder_inp = self.untreated_dcd_feat.expand_as(decoder_inp)
            obj_dists, obj_preds = self.decoder_rnn(forest, decoder_inp)
        label_roi = torch.cat([self.obj_embed2(obj_preds.long()), roi_feats], dim=-1)
        if self.training and self.effect_analysis:
            update_moving_average(self.untreated_edg_feat, label_roi, self.average_ratio)
        if counterfactual:
            label_roi = self.untreated_edg_feat.expand_as(label_roi)
        edge_ctx = self.edge_ctx_rnn(forest, torch.cat([label_roi, obj_ctx], dim=-1))
        return obj_dists, obj_preds, edge_ctx, bi_preds


def binary_loss(bi_preds: Sequence[Tensor], rel_binarys: Sequence[Tensor]) -> Tensor:
    """Mean over images of the BCE between the pair logits and "the pair is related"."""
    losses = [F.binary_cross_entropy_with_logits(p, (t > 0).to(p.dtype))
              for p, t in zip(bi_preds, rel_binarys)]
    return sum(losses) / len(losses)


@MODELS.register_module()
class VCTreePredictor(BaseRelationPredictor):
    """VCTree relation predictor (SGB ``VCTreePredictor``).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet' (set by the detector).
        num_classes: C.
        num_predicates: P.
        in_channels: box feature size.
        union_channels: union feature size.
        glove_dir: folder with ``glove.6B.<embed_dim>d.txt``; None = random class vectors.
        embed_dim: class embedding size (GloVe 6B 200-d).
        hidden_dim: context size (SGB ``CONTEXT_HIDDEN_DIM``).
        pooling_dim: size of the gated pair feature (SGB ``CONTEXT_POOLING_DIM``).
        dropout: TreeLSTM dropout (SGB ``CONTEXT_DROPOUT_RATE``).
        num_obj_layers: object BiTreeLSTM layers.
        num_edge_layers: edge BiTreeLSTM layers.
        loss_binary_weight: weight of the tree score net's auxiliary loss.
        later_nms_thr: SGDet test label NMS.
        box_bn_momentum: momentum of the box embeddings' BatchNorms (SGB: 0.001, i.e.
            running statistics over ~1000 iterations; short schedules need more).
        init_cfg: mmengine init config.
    """
    uses_statistics = True
    uses_word_vectors = True

    def __init__(self, mode: str, num_classes: int, num_predicates: int, in_channels: int,
                 union_channels: int, glove_dir: Optional[str] = None, embed_dim: int = 200,
                 hidden_dim: int = 512, pooling_dim: int = 4096, dropout: float = 0.2,
                 num_obj_layers: int = 1, num_edge_layers: int = 1,
                 loss_binary_weight: float = 1.0, later_nms_thr: float = 0.5,
                 box_bn_momentum: float = 0.001, init_cfg: Optional[dict] = None):
        super().__init__(mode, num_classes, num_predicates, in_channels, union_channels,
                         later_nms_thr=later_nms_thr, init_cfg=init_cfg)
        self.glove_dir = glove_dir
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.loss_binary_weight = loss_binary_weight
        self.context_layer = VCTreeContext(self.mode, self.num_obj_cls, in_channels, embed_dim,
                                           hidden_dim, dropout, num_obj_layers,
                                           num_edge_layers, box_bn_momentum=box_bn_momentum)
        self.post_emb = nn.Linear(hidden_dim, hidden_dim * 2)
        self.post_cat = nn.Linear(hidden_dim * 2, pooling_dim)
        self.ctx_compress = nn.Linear(pooling_dim, self.num_rel_cls)
        layer_init(self.post_emb, std=10.0 * (1.0 / hidden_dim) ** 0.5)
        layer_init(self.post_cat)
        layer_init(self.ctx_compress)
        if pooling_dim != union_channels:
            self.up_dim = nn.Linear(union_channels, pooling_dim)
            layer_init(self.up_dim)
        self.freq_bias = FrequencyBias(self.num_obj_cls, self.num_rel_cls)

    def load_statistics(self, statistics: dict) -> None:
        self.freq_bias.load_pred_dist(statistics['pred_dist'])
        self.context_layer.load_statistics(statistics)

    def load_word_vectors(self, obj_classes: Sequence[str], glove_dir: Optional[str],
                          key: str) -> None:
        vectors = class_name_vectors(['start'] + list(obj_classes), glove_dir,
                                     dim=self.embed_dim, key=key)
        self.context_layer.load_word_vectors(vectors)

    def forward(self, proposals, rel_pairs, roi_feats, union_feats, rel_labels=None,
                rel_binarys=None):
        labels = self.gt_labels(proposals)
        if self.mode == 'predcls' and labels is None:
            raise KeyError('predcls: proposals need ground-truth `labels`')
        det_logits = None if self.mode == 'predcls' else self.detector_logits(proposals)
        obj_dists, obj_preds, edge_ctx, bi_preds = self.context_layer(
            roi_feats, proposals, labels, det_logits)

        edge_rep = F.relu(self.post_emb(edge_ctx)).view(-1, 2, self.hidden_dim)
        num_objs = [len(p) for p in proposals]
        offsets = torch.tensor([0] + num_objs[:-1], device=roi_feats.device).cumsum(0)
        glob = torch.cat([pairs + off for pairs, off in zip(rel_pairs, offsets)], dim=0)
        prod_rep = self.post_cat(torch.cat([edge_rep[glob[:, 0], 0], edge_rep[glob[:, 1], 1]],
                                           dim=-1))
        union = self.up_dim(union_feats) if hasattr(self, 'up_dim') else union_feats
        rel_dists = (self.ctx_compress(prod_rep * union)
                     + self.freq_bias.index_with_labels(obj_preds[glob].long()))
        extra = {}
        if self.training:
            if rel_binarys is None:
                raise KeyError('VCTreePredictor needs `rel_binarys` (the related-pair matrix of '
                               'each image) in training; the RelationHead passes them')
            extra['loss_vctree_binary'] = self.loss_binary_weight * binary_loss(bi_preds,
                                                                                 rel_binarys)
        return (list(obj_dists.split(num_objs)),
                list(rel_dists.split([len(p) for p in rel_pairs])), extra)
