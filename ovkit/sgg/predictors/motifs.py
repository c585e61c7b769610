"""Neural Motifs (Zellers et al., CVPR 2018) as SGB implements it (``model_motifs.py``,
``MotifPredictor`` in ``roi_relation_predictors.py``).

Boxes of an image are ordered by centre x (right to left, as SGB's ``sort_rois``); an object
BiLSTM reads [RoI feature, class embedding, 128-d box embedding]; outside PredCls an LSTM
decoder (highway LSTM cell, teacher-forced in training) commits object labels in that order;
an edge BiLSTM reads [label embedding, RoI feature, object context]; each pair's
``post_cat([head_s, tail_o])`` gates the union feature, ``rel_compress`` turns it into
predicate logits and the frequency bias of the pair's labels is added.

Sequences of different images run together through cuDNN-style packed sequences
(``torch.nn.utils.rnn.pack_sequence``) instead of SGB's hand-built ``PackedSequence``.
"""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.structures import InstanceData
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

from ..glove import class_name_vectors
from .base import (
    BaseRelationPredictor,
    FrequencyBias,
    encode_box_info,
    layer_init,
    nms_class_assignment,
    to_onehot,
)


def centre_x_order(proposals: Sequence[InstanceData]) -> List[Tensor]:
    """Per image, batch-global box indices sorted by centre x, largest first."""
    orders, start = [], 0
    for p in proposals:
        cx = 0.5 * (p.bboxes[:, 0] + p.bboxes[:, 2])
        orders.append(torch.sort(cx, descending=True, stable=True)[1] + start)
        start += len(p)
    return orders


def run_packed(rnn: nn.LSTM, feats: Tensor, orders: List[Tensor]) -> Tensor:
    """Run ``rnn`` over each image's boxes in ``orders``; outputs back in box order."""
    packed = pack_sequence([feats[o] for o in orders], enforce_sorted=False)
    out, lengths = pad_packed_sequence(rnn(packed)[0], batch_first=True)
    result = out.new_empty((feats.shape[0], out.shape[-1]))
    result[torch.cat(orders)] = torch.cat([out[i, :int(n)] for i, n in enumerate(lengths)])
    return result


class DecoderRNN(nn.Module):
    """Object-label decoder: a highway LSTM cell stepping through the ordered boxes, fed the
    embedding of the previous box's label (SGB ``DecoderRNN``).

    Args:
        num_obj_cls: C+1.
        embed_dim: label embedding size.
        inputs_dim: size of the per-box input.
        hidden_dim: LSTM size.
        rnn_drop: dropout on the outputs, one mask per sequence (training only).
    """

    def __init__(self, num_obj_cls: int, embed_dim: int, inputs_dim: int, hidden_dim: int,
                 rnn_drop: float):
        super().__init__()
        self.num_obj_cls = num_obj_cls
        self.hidden_size = hidden_dim
        self.rnn_drop = rnn_drop
        # row 0 = 'start', row l + 1 = label l (background included)
        self.obj_embed = nn.Embedding(num_obj_cls + 1, embed_dim)
        self.input_linearity = nn.Linear(inputs_dim + embed_dim, 6 * hidden_dim)
        self.state_linearity = nn.Linear(hidden_dim, 5 * hidden_dim)
        self.out_obj = nn.Linear(hidden_dim, num_obj_cls)
        nn.init.constant_(self.state_linearity.bias, 0.0)
        nn.init.constant_(self.input_linearity.bias, 0.0)

    def step(self, inp: Tensor, state: Tensor, memory: Tensor, mask: Optional[Tensor]):
        h = self.hidden_size
        pi = self.input_linearity(inp)
        ps = self.state_linearity(state)
        input_gate = torch.sigmoid(pi[:, :h] + ps[:, :h])
        forget_gate = torch.sigmoid(pi[:, h:2 * h] + ps[:, h:2 * h])
        memory_init = torch.tanh(pi[:, 2 * h:3 * h] + ps[:, 2 * h:3 * h])
        output_gate = torch.sigmoid(pi[:, 3 * h:4 * h] + ps[:, 3 * h:4 * h])
        memory = input_gate * memory_init + forget_gate * memory
        out = output_gate * torch.tanh(memory)
        highway = torch.sigmoid(pi[:, 4 * h:5 * h] + ps[:, 4 * h:5 * h])
        out = highway * out + (1 - highway) * pi[:, 5 * h:6 * h]
        if mask is not None:
            out = out * mask
        return out, memory

    def forward(self, inputs: Tensor, orders: List[Tensor], labels: Optional[Tensor] = None,
                boxes_per_cls: Optional[List[Tensor]] = None, nms_thr: float = 0.5):
        """Decode the labels of every box.

        Args:
            inputs: [sum N, inputs_dim] per-box inputs in box order.
            orders: per image, batch-global indices in decoding order.
            labels: [sum N] labels for teacher forcing (training), 0 = background (then the
                prediction is fed instead).
            boxes_per_cls: SGDet testing, per image [N_i, C+1, 4]; the committed labels then
                come from class-wise NMS over the decoded distributions.
            nms_thr: IoU of that NMS.

        Returns:
            tuple: logits [sum N, C+1] and committed labels [sum N], in box order.
        """
        num = inputs.shape[0]
        lengths = torch.tensor([len(o) for o in orders])
        batch, steps = len(orders), int(lengths.max())
        device = inputs.device
        # [B, T] global index of the box decoded at step t of image b (-1 = padding)
        index = torch.full((batch, steps), -1, dtype=torch.long, device=device)
        for b, o in enumerate(orders):
            index[b, :len(o)] = o
        state = inputs.new_zeros((batch, self.hidden_size))
        memory = inputs.new_zeros((batch, self.hidden_size))
        mask = None
        if self.training and self.rnn_drop > 0:
            keep = torch.rand((batch, self.hidden_size), device=device) > self.rnn_drop
            mask = keep.to(inputs.dtype) / (1.0 - self.rnn_drop)
        prev = self.obj_embed.weight[0].expand(batch, -1)
        logits = inputs.new_zeros((num, self.num_obj_cls))
        committed = torch.zeros(num, dtype=torch.long, device=device)
        for t in range(steps):
            idx = index[:, t]
            active = idx >= 0
            safe = idx.clamp(min=0)
            state, memory = self.step(torch.cat([inputs[safe], prev], 1), state, memory, mask)
            dist = self.out_obj(state)
            best = dist[:, 1:].argmax(1) + 1
            if self.training and labels is not None:
                lab = labels[safe].clone()
                lab = torch.where(lab == 0, best, lab)
            else:
                lab = best
            logits[idx[active]] = dist[active]
            committed[idx[active]] = lab[active]
            prev = self.obj_embed(lab + 1)
        if boxes_per_cls is not None and not self.training:
            for o, boxes in zip(orders, boxes_per_cls):
                sel = torch.sort(o)[0]  # box order of this image
                probs = F.softmax(logits[sel], dim=1)
                committed[sel] = nms_class_assignment(boxes, probs, nms_thr)
        return logits, committed


class LSTMContext(nn.Module):
    """Object and edge context of Motifs (SGB ``LSTMContext`` without the TDE averages).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        num_obj_cls: C+1.
        obj_dim: RoI feature size.
        embed_dim: class embedding size (GloVe 200).
        hidden_dim: LSTM size (512).
        dropout: decoder dropout and LSTM inter-layer dropout.
        num_obj_layers: object BiLSTM layers.
        num_edge_layers: edge BiLSTM layers.
        later_nms_thr: SGDet test NMS of the decoder.
        box_bn_momentum: momentum of the box embedding's BatchNorm (SGB: 0.001).
    """

    def __init__(self, mode: str, num_obj_cls: int, obj_dim: int, embed_dim: int,
                 hidden_dim: int, dropout: float, num_obj_layers: int, num_edge_layers: int,
                 later_nms_thr: float, box_bn_momentum: float = 0.001):
        super().__init__()
        self.mode = mode
        self.num_obj_cls = num_obj_cls
        self.later_nms_thr = later_nms_thr
        self.obj_embed1 = nn.Embedding(num_obj_cls, embed_dim)
        self.obj_embed2 = nn.Embedding(num_obj_cls, embed_dim)
        self.pos_embed = nn.Sequential(
            nn.Linear(9, 32), nn.BatchNorm1d(32, momentum=box_bn_momentum),
            nn.Linear(32, 128), nn.ReLU(inplace=True))
        self.obj_ctx_rnn = nn.LSTM(
            input_size=obj_dim + embed_dim + 128, hidden_size=hidden_dim,
            num_layers=num_obj_layers, dropout=dropout if num_obj_layers > 1 else 0,
            bidirectional=True)
        if mode != 'predcls':
            # PredCls takes labels from the ground truth: no decoder, so that every parameter
            # of the model receives a gradient (DDP requirement).
            self.decoder_rnn = DecoderRNN(
                num_obj_cls, embed_dim, inputs_dim=hidden_dim + obj_dim + embed_dim + 128,
                hidden_dim=hidden_dim, rnn_drop=dropout)
        self.edge_ctx_rnn = nn.LSTM(
            input_size=embed_dim + hidden_dim + obj_dim, hidden_size=hidden_dim,
            num_layers=num_edge_layers, dropout=dropout if num_edge_layers > 1 else 0,
            bidirectional=True)
        self.lin_obj_h = nn.Linear(hidden_dim * 2, hidden_dim)
        self.lin_edge_h = nn.Linear(hidden_dim * 2, hidden_dim)

    def load_word_vectors(self, vectors: Tensor) -> None:
        """``vectors`` [C+2, embed_dim]: the word 'start', then the class names (background
        first); the decoder takes all rows, the label embeddings the class rows."""
        with torch.no_grad():
            self.obj_embed1.weight.copy_(vectors[1:])
            self.obj_embed2.weight.copy_(vectors[1:])
            if hasattr(self, 'decoder_rnn'):
                self.decoder_rnn.obj_embed.weight.copy_(vectors)

    def forward(self, roi_feats: Tensor, proposals: Sequence[InstanceData],
                labels: Optional[Tensor], detector_logits: Optional[Tensor]):
        """Returns object logits [sum N, C+1], committed labels [sum N] and edge context."""
        if self.mode == 'predcls':
            obj_embed = self.obj_embed1(labels)
        else:
            obj_embed = F.softmax(detector_logits, dim=1) @ self.obj_embed1.weight
        pos_embed = self.pos_embed(encode_box_info(proposals))
        obj_pre_rep = torch.cat([roi_feats, obj_embed, pos_embed], dim=-1)

        orders = centre_x_order(proposals)
        obj_ctx = self.lin_obj_h(run_packed(self.obj_ctx_rnn, obj_pre_rep, orders))
        if self.mode == 'predcls':
            obj_preds = labels
            obj_dists = to_onehot(labels, self.num_obj_cls)
        else:
            boxes_per_cls = None
            if self.mode == 'sgdet' and not self.training:
                boxes_per_cls = [p.boxes_per_cls for p in proposals]
            obj_dists, obj_preds = self.decoder_rnn(
                torch.cat([obj_pre_rep, obj_ctx], dim=-1), orders,
                labels=labels if self.training else None, boxes_per_cls=boxes_per_cls,
                nms_thr=self.later_nms_thr)
        edge_rep = torch.cat([self.obj_embed2(obj_preds), roi_feats, obj_ctx], dim=-1)
        edge_ctx = self.lin_edge_h(run_packed(self.edge_ctx_rnn, edge_rep, orders))
        return obj_dists, obj_preds, edge_ctx


@MODELS.register_module()
class MotifsPredictor(BaseRelationPredictor):
    """Neural Motifs relation predictor (SGB ``MotifPredictor``).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet' (set by the detector).
        num_classes: C.
        num_predicates: P.
        in_channels: box feature size (SGB 4096).
        union_channels: union feature size (SGB 4096).
        glove_dir: folder with ``glove.6B.<embed_dim>d.txt``; None = random class vectors
            (synthetic data, tests).
        embed_dim: class embedding size (GloVe 6B 200-d).
        hidden_dim: context size (SGB ``CONTEXT_HIDDEN_DIM`` 512).
        pooling_dim: size of the gated pair feature (SGB ``CONTEXT_POOLING_DIM`` 4096).
        dropout: SGB ``CONTEXT_DROPOUT_RATE``.
        num_obj_layers: SGB ``CONTEXT_OBJ_LAYER``.
        num_edge_layers: SGB ``CONTEXT_REL_LAYER``.
        use_vision: gate the union feature (SGB ``PREDICT_USE_VISION``).
        use_bias: add the frequency bias (SGB ``PREDICT_USE_BIAS``).
        later_nms_thr: SGDet test label NMS.
        box_bn_momentum: momentum of the box embedding's BatchNorm running statistics (SGB:
            0.001, i.e. averaged over ~1000 iterations; short schedules need more).
        init_cfg: mmengine init config.
    """
    uses_word_vectors = True

    def __init__(self, mode: str, num_classes: int, num_predicates: int, in_channels: int,
                 union_channels: int, glove_dir: Optional[str] = None, embed_dim: int = 200,
                 hidden_dim: int = 512, pooling_dim: int = 4096, dropout: float = 0.2,
                 num_obj_layers: int = 1, num_edge_layers: int = 1, use_vision: bool = True,
                 use_bias: bool = True, later_nms_thr: float = 0.5,
                 box_bn_momentum: float = 0.001, init_cfg: Optional[dict] = None):
        super().__init__(mode, num_classes, num_predicates, in_channels, union_channels,
                         later_nms_thr=later_nms_thr, init_cfg=init_cfg)
        self.glove_dir = glove_dir
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.use_vision = use_vision
        self.use_bias = use_bias
        self.uses_statistics = use_bias
        self.needs_union_features = use_vision
        self.context_layer = LSTMContext(
            self.mode, self.num_obj_cls, in_channels, embed_dim, hidden_dim, dropout,
            num_obj_layers, num_edge_layers, later_nms_thr, box_bn_momentum)
        self.post_emb = nn.Linear(hidden_dim, hidden_dim * 2)
        self.post_cat = nn.Linear(hidden_dim * 2, pooling_dim)
        self.rel_compress = nn.Linear(pooling_dim, self.num_rel_cls)
        layer_init(self.post_emb, std=10.0 * (1.0 / hidden_dim) ** 0.5)
        layer_init(self.post_cat)
        layer_init(self.rel_compress)
        if use_vision and pooling_dim != union_channels:
            self.up_dim = nn.Linear(union_channels, pooling_dim)
            layer_init(self.up_dim)
        if use_bias:
            self.freq_bias = FrequencyBias(self.num_obj_cls, self.num_rel_cls)

    def load_statistics(self, statistics: dict) -> None:
        if self.use_bias:
            self.freq_bias.load_pred_dist(statistics['pred_dist'])

    def load_word_vectors(self, obj_classes: Sequence[str], glove_dir: Optional[str],
                          key: str) -> None:
        vectors = class_name_vectors(['start'] + list(obj_classes), glove_dir,
                                     dim=self.embed_dim, key=key)
        self.context_layer.load_word_vectors(vectors)

    def forward(self, proposals, rel_pairs, roi_feats, union_feats, rel_labels=None,
                rel_binarys=None):
        labels = self.gt_labels(proposals)
        det_logits = None if self.mode == 'predcls' else self.detector_logits(proposals)
        if self.mode == 'predcls' and labels is None:
            raise KeyError('predcls: proposals need ground-truth `labels`')
        obj_dists, obj_preds, edge_ctx = self.context_layer(
            roi_feats, proposals, labels, det_logits)

        edge_rep = self.post_emb(edge_ctx).view(-1, 2, self.hidden_dim)
        head_rep, tail_rep = edge_rep[:, 0], edge_rep[:, 1]
        num_objs = [len(p) for p in proposals]
        offsets = torch.tensor([0] + num_objs[:-1], device=roi_feats.device).cumsum(0)
        glob = torch.cat([pairs + off for pairs, off in zip(rel_pairs, offsets)], dim=0)
        prod_rep = self.post_cat(torch.cat([head_rep[glob[:, 0]], tail_rep[glob[:, 1]]], -1))
        if self.use_vision:
            union = self.up_dim(union_feats) if hasattr(self, 'up_dim') else union_feats
            prod_rep = prod_rep * union
        rel_dists = self.rel_compress(prod_rep)
        if self.use_bias:
            rel_dists = rel_dists + self.freq_bias.index_with_labels(obj_preds[glob].long())

        return (list(obj_dists.split(num_objs)),
                list(rel_dists.split([len(p) for p in rel_pairs])), {})
