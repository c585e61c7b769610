"""Iterative Message Passing (Xu et al., CVPR 2017) as SGB implements it
(``model_msg_passing.py``, ``IMPPredictor``): node and edge GRUs exchange gated messages for
three rounds; objects are classified from the final node states (outside PredCls) and predicates
from the final edge states. No frequency bias (SGB's IMP has it switched off).
"""
from typing import Optional

import torch
from mmdet.registry import MODELS
from torch import nn

from .base import BaseRelationPredictor, layer_init, to_onehot


def _make_fc(in_features: int, out_features: int) -> nn.Linear:
    """SGB ``make_fc``: kaiming-uniform (a=1) weight, zero bias."""
    fc = nn.Linear(in_features, out_features)
    nn.init.kaiming_uniform_(fc.weight, a=1)
    nn.init.constant_(fc.bias, 0)
    return fc


@MODELS.register_module()
class IMPPredictor(BaseRelationPredictor):
    """Iterative message passing relation predictor.

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet' (set by the detector).
        num_classes: C.
        num_predicates: P.
        in_channels: box feature size.
        union_channels: union feature size.
        hidden_dim: GRU size (SGB: 512).
        pooling_dim: size the union feature is projected to first when it differs
            (SGB ``CONTEXT_POOLING_DIM``).
        num_iter: message passing rounds (SGB: 3).
        later_nms_thr: SGDet test label NMS.
        init_cfg: mmengine init config.
    """

    def __init__(self, mode: str, num_classes: int, num_predicates: int, in_channels: int,
                 union_channels: int, hidden_dim: int = 512, pooling_dim: int = 4096,
                 num_iter: int = 3, later_nms_thr: float = 0.5,
                 init_cfg: Optional[dict] = None):
        super().__init__(mode, num_classes, num_predicates, in_channels, union_channels,
                         later_nms_thr=later_nms_thr, init_cfg=init_cfg)
        self.hidden_dim = hidden_dim
        self.num_iter = num_iter
        if pooling_dim != union_channels:
            self.up_dim = nn.Linear(union_channels, pooling_dim)
            layer_init(self.up_dim)
        self.rel_fc = _make_fc(hidden_dim, self.num_rel_cls)
        if mode != 'predcls':
            # PredCls labels come from the ground truth; an unused classifier would break DDP.
            self.obj_fc = _make_fc(hidden_dim, self.num_obj_cls)
        self.obj_unary = _make_fc(in_channels, hidden_dim)
        self.edge_unary = _make_fc(pooling_dim, hidden_dim)
        self.edge_gru = nn.GRUCell(input_size=hidden_dim, hidden_size=hidden_dim)
        self.node_gru = nn.GRUCell(input_size=hidden_dim, hidden_size=hidden_dim)
        self.sub_vert_w_fc = nn.Sequential(nn.Linear(hidden_dim * 2, 1), nn.Sigmoid())
        self.obj_vert_w_fc = nn.Sequential(nn.Linear(hidden_dim * 2, 1), nn.Sigmoid())
        self.out_edge_w_fc = nn.Sequential(nn.Linear(hidden_dim * 2, 1), nn.Sigmoid())
        self.in_edge_w_fc = nn.Sequential(nn.Linear(hidden_dim * 2, 1), nn.Sigmoid())

    def forward(self, proposals, rel_pairs, roi_feats, union_feats, rel_labels=None,
                rel_binarys=None):
        if hasattr(self, 'up_dim'):
            union_feats = self.up_dim(union_feats)
        num_objs = [len(p) for p in proposals]
        obj_rep = self.obj_unary(roi_feats)
        rel_rep = torch.relu(self.edge_unary(union_feats))
        offsets = torch.tensor([0] + num_objs[:-1], device=roi_feats.device).cumsum(0)
        glob = torch.cat([pairs + off for pairs, off in zip(rel_pairs, offsets)], dim=0)
        sub, obj = glob[:, 0], glob[:, 1]

        vert = self.node_gru(obj_rep, torch.zeros_like(obj_rep))
        edge = self.edge_gru(rel_rep, torch.zeros_like(rel_rep))
        for _ in range(self.num_iter):
            sub_vert, obj_vert = vert[sub], vert[obj]
            weighted_sub = self.sub_vert_w_fc(torch.cat([sub_vert, edge], 1)) * sub_vert
            weighted_obj = self.obj_vert_w_fc(torch.cat([obj_vert, edge], 1)) * obj_vert
            new_edge = self.edge_gru(weighted_sub + weighted_obj, edge)
            pre_out = self.out_edge_w_fc(torch.cat([sub_vert, edge], 1)) * edge
            pre_in = self.in_edge_w_fc(torch.cat([obj_vert, edge], 1)) * edge
            # SGB multiplies dense sub2rel/obj2rel incidence matrices; index_add is the same sum
            vert_ctx = torch.zeros_like(vert).index_add(0, sub, pre_out).index_add(0, obj, pre_in)
            vert = self.node_gru(vert_ctx, vert)
            edge = new_edge

        if self.mode == 'predcls':
            obj_dists = to_onehot(self.gt_labels(proposals), self.num_obj_cls)
        else:
            obj_dists = self.obj_fc(vert)
        rel_dists = self.rel_fc(edge)
        return (list(obj_dists.split(num_objs)),
                list(rel_dists.split([len(p) for p in rel_pairs])), {})
