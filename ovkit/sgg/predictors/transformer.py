"""The Transformer relation predictor of SGB (``model_transformer.py``, ``TransformerPredictor``,
contributed there by Jiaxin Shi).

Object context: [RoI feature, class embedding, 128-d box embedding] -> linear -> a post-LN
Transformer encoder over the boxes of each image (SGB: 4 layers); outside PredCls a linear
layer classifies the objects (class-wise NMS commits the labels in SGDet testing). Edge
context: [RoI feature, object context, label embedding] -> linear -> a second encoder (SGB: 2
layers). Predicates: ``rel_compress(post_cat([head_s, tail_o]) * union) +
ctx_compress([head_s, tail_o]) + freq``.

The encoder layers are torch's ``nn.TransformerEncoderLayer`` (post-LN, ReLU, padded images
masked by ``src_key_padding_mask``), with ``d_k = hidden_dim / num_heads`` (SGB's 512 / 8 = 64).
SGB's hand-written layer differs only in where dropout sits in the feed-forward block.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.structures import InstanceData
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from ..glove import class_name_vectors
from .base import BaseRelationPredictor, FrequencyBias, encode_box_info, layer_init, to_onehot


class ImageTransformerEncoder(nn.Module):
    """A post-LN Transformer encoder over the boxes of each image of a batch.

    Args:
        num_layers: encoder layers.
        d_model: feature size.
        num_heads: attention heads (``d_model`` must be divisible by it).
        ffn_dim: feed-forward size.
        dropout: dropout rate.
    """

    def __init__(self, num_layers: int, d_model: int, num_heads: int, ffn_dim: int,
                 dropout: float):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f'Transformer hidden_dim {d_model} must be divisible by num_heads '
                             f'{num_heads} (model.relation_head.predictor)')
        layer = nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward=ffn_dim,
                                           dropout=dropout, activation='relu',
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)

    def forward(self, feats: Tensor, num_objs: Sequence[int]) -> Tensor:
        """[sum N, d] -> [sum N, d]; boxes attend only to boxes of their own image."""
        padded = pad_sequence(list(feats.split(list(num_objs))), batch_first=True)
        lengths = torch.tensor(list(num_objs), device=feats.device)
        pad_mask = torch.arange(padded.shape[1], device=feats.device)[None] >= lengths[:, None]
        out = self.encoder(padded, src_key_padding_mask=pad_mask)
        return out[~pad_mask]


class TransformerContext(nn.Module):
    """Object and edge context of the Transformer predictor (SGB ``TransformerContext``).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        num_obj_cls: C+1.
        obj_dim: RoI feature size.
        embed_dim: class embedding size.
        hidden_dim: model size of the encoders.
        num_obj_layers: object encoder layers (SGB 4).
        num_edge_layers: edge encoder layers (SGB 2).
        num_heads: attention heads (SGB 8).
        ffn_dim: feed-forward size (SGB 2048).
        dropout: encoder dropout (SGB 0.1).
    """

    def __init__(self, mode: str, num_obj_cls: int, obj_dim: int, embed_dim: int,
                 hidden_dim: int, num_obj_layers: int, num_edge_layers: int, num_heads: int,
                 ffn_dim: int, dropout: float):
        super().__init__()
        self.mode = mode
        self.num_obj_cls = num_obj_cls
        self.obj_embed1 = nn.Embedding(num_obj_cls, embed_dim)
        self.obj_embed2 = nn.Embedding(num_obj_cls, embed_dim)
        self.bbox_embed = nn.Sequential(
            nn.Linear(9, 32), nn.ReLU(inplace=True), nn.Dropout(0.1),
            nn.Linear(32, 128), nn.ReLU(inplace=True), nn.Dropout(0.1))
        self.lin_obj = nn.Linear(obj_dim + embed_dim + 128, hidden_dim)
        self.lin_edge = nn.Linear(embed_dim + hidden_dim + obj_dim, hidden_dim)
        if mode != 'predcls':
            self.out_obj = nn.Linear(hidden_dim, num_obj_cls)
        self.context_obj = ImageTransformerEncoder(num_obj_layers, hidden_dim, num_heads,
                                                   ffn_dim, dropout)
        self.context_edge = ImageTransformerEncoder(num_edge_layers, hidden_dim, num_heads,
                                                    ffn_dim, dropout)

    def load_word_vectors(self, vectors: Tensor) -> None:
        """``vectors`` [C+1, embed_dim]: the class names, background first."""
        with torch.no_grad():
            self.obj_embed1.weight.copy_(vectors)
            self.obj_embed2.weight.copy_(vectors)

    def forward(self, roi_feats: Tensor, proposals: Sequence[InstanceData],
                labels: Optional[Tensor], detector_logits: Optional[Tensor], commit):
        """Returns object logits [N, C+1], labels [N] and the edge context [N, hidden].

        ``commit(proposals, obj_logits)`` gives the test-time labels (class-wise NMS in
        SGDet).
        """
        num_objs = [len(p) for p in proposals]
        if self.mode == 'predcls':
            obj_embed = self.obj_embed1(labels)
        else:
            obj_embed = F.softmax(detector_logits, dim=1) @ self.obj_embed1.weight
        pos_embed = self.bbox_embed(encode_box_info(proposals))
        obj_feats = self.context_obj(
            self.lin_obj(torch.cat([roi_feats, obj_embed, pos_embed], dim=-1)), num_objs)
        if self.mode == 'predcls':
            obj_preds, obj_dists = labels, to_onehot(labels, self.num_obj_cls)
        else:
            obj_dists = self.out_obj(obj_feats)
            if self.training:
                obj_preds = obj_dists[:, 1:].argmax(1) + 1
            else:
                obj_preds = commit(proposals, obj_dists)
        edge_pre = torch.cat([roi_feats, obj_feats, self.obj_embed2(obj_preds.long())], dim=-1)
        edge_ctx = self.context_edge(self.lin_edge(edge_pre), num_objs)
        return obj_dists, obj_preds, edge_ctx


@MODELS.register_module()
class TransformerPredictor(BaseRelationPredictor):
    """Transformer relation predictor (SGB ``TransformerPredictor``).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet' (set by the detector).
        num_classes: C.
        num_predicates: P.
        in_channels: box feature size.
        union_channels: union feature size.
        glove_dir: folder with ``glove.6B.<embed_dim>d.txt``; None = random class vectors.
        embed_dim: class embedding size (GloVe 6B 200-d).
        hidden_dim: encoder size (SGB ``CONTEXT_HIDDEN_DIM`` 512).
        pooling_dim: size of the gated pair feature (SGB ``CONTEXT_POOLING_DIM`` 4096).
        num_obj_layers: object encoder layers (SGB ``TRANSFORMER.OBJ_LAYER`` 4).
        num_edge_layers: edge encoder layers (SGB ``TRANSFORMER.REL_LAYER`` 2).
        num_heads: attention heads (SGB ``TRANSFORMER.NUM_HEAD`` 8).
        ffn_dim: feed-forward size (SGB ``TRANSFORMER.INNER_DIM`` 2048).
        dropout: encoder dropout (SGB ``TRANSFORMER.DROPOUT_RATE`` 0.1).
        use_bias: add the frequency bias (SGB ``PREDICT_USE_BIAS``).
        later_nms_thr: SGDet test label NMS.
        init_cfg: mmengine init config.
    """
    uses_word_vectors = True

    def __init__(self, mode: str, num_classes: int, num_predicates: int, in_channels: int,
                 union_channels: int, glove_dir: Optional[str] = None, embed_dim: int = 200,
                 hidden_dim: int = 512, pooling_dim: int = 4096, num_obj_layers: int = 4,
                 num_edge_layers: int = 2, num_heads: int = 8, ffn_dim: int = 2048,
                 dropout: float = 0.1, use_bias: bool = True, later_nms_thr: float = 0.5,
                 init_cfg: Optional[dict] = None):
        super().__init__(mode, num_classes, num_predicates, in_channels, union_channels,
                         later_nms_thr=later_nms_thr, init_cfg=init_cfg)
        self.glove_dir = glove_dir
        self.embed_dim = embed_dim
        self.hidden_dim = hidden_dim
        self.use_bias = use_bias
        self.uses_statistics = use_bias
        self.context_layer = TransformerContext(
            self.mode, self.num_obj_cls, in_channels, embed_dim, hidden_dim, num_obj_layers,
            num_edge_layers, num_heads, ffn_dim, dropout)
        self.post_emb = nn.Linear(hidden_dim, hidden_dim * 2)
        self.post_cat = nn.Linear(hidden_dim * 2, pooling_dim)
        self.rel_compress = nn.Linear(pooling_dim, self.num_rel_cls)
        self.ctx_compress = nn.Linear(hidden_dim * 2, self.num_rel_cls)
        layer_init(self.post_emb, std=10.0 * (1.0 / hidden_dim) ** 0.5)
        layer_init(self.rel_compress)
        layer_init(self.ctx_compress)
        layer_init(self.post_cat)
        if pooling_dim != union_channels:
            self.up_dim = nn.Linear(union_channels, pooling_dim)
            layer_init(self.up_dim)
        if use_bias:
            self.freq_bias = FrequencyBias(self.num_obj_cls, self.num_rel_cls)

    def load_statistics(self, statistics: dict) -> None:
        if self.use_bias:
            self.freq_bias.load_pred_dist(statistics['pred_dist'])

    def load_word_vectors(self, obj_classes: Sequence[str], glove_dir: Optional[str],
                          key: str) -> None:
        vectors = class_name_vectors(list(obj_classes), glove_dir, dim=self.embed_dim, key=key)
        self.context_layer.load_word_vectors(vectors)

    def forward(self, proposals, rel_pairs, roi_feats, union_feats, rel_labels=None,
                rel_binarys=None):
        labels = self.gt_labels(proposals)
        if self.mode == 'predcls' and labels is None:
            raise KeyError('predcls: proposals need ground-truth `labels`')
        det_logits = None if self.mode == 'predcls' else self.detector_logits(proposals)
        obj_dists, obj_preds, edge_ctx = self.context_layer(roi_feats, proposals, labels,
                                                            det_logits, self.commit_labels)
        edge_rep = self.post_emb(edge_ctx).view(-1, 2, self.hidden_dim)
        num_objs = [len(p) for p in proposals]
        offsets = torch.tensor([0] + num_objs[:-1], device=roi_feats.device).cumsum(0)
        glob = torch.cat([pairs + off for pairs, off in zip(rel_pairs, offsets)], dim=0)
        prod_rep = torch.cat([edge_rep[glob[:, 0], 0], edge_rep[glob[:, 1], 1]], dim=-1)
        union = self.up_dim(union_feats) if hasattr(self, 'up_dim') else union_feats
        rel_dists = (self.rel_compress(self.post_cat(prod_rep) * union)
                     + self.ctx_compress(prod_rep))
        if self.use_bias:
            rel_dists = rel_dists + self.freq_bias.index_with_labels(obj_preds[glob].long())
        return (list(obj_dists.split(num_objs)),
                list(rel_dists.split([len(p) for p in rel_pairs])), {})

