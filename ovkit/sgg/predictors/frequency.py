"""The frequency-only baseline (Zellers et al.'s "FREQ"): predicate logits are the frequency
bias of the (subject, object) labels and nothing else — no image feature, no box geometry.

The bias table starts from the training-split log-frequencies and is trainable (as the bias
inside Motifs), so training it fits p(predicate | labels) on the sampled pairs, background
included. Object labels are not refined: PredCls uses the ground truth, SGCls/SGDet the frozen
detector's classes.
"""
from typing import Optional

import torch
from mmdet.registry import MODELS

from .base import BaseRelationPredictor, FrequencyBias, to_onehot


@MODELS.register_module()
class FrequencyPredictor(BaseRelationPredictor):
    """Frequency-only relation predictor.

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet' (set by the detector).
        num_classes: C.
        num_predicates: P.
        in_channels: box feature size (unused; the interface passes it).
        union_channels: union feature size (unused).
        later_nms_thr: SGDet test label NMS.
        init_cfg: mmengine init config.
    """
    uses_statistics = True
    #: the head may skip the union-box features, which this predictor never reads.
    needs_union_features = False
    needs_roi_features = False

    def __init__(self, mode: str, num_classes: int, num_predicates: int, in_channels: int = 0,
                 union_channels: int = 0, later_nms_thr: float = 0.5,
                 init_cfg: Optional[dict] = None):
        super().__init__(mode, num_classes, num_predicates, in_channels, union_channels,
                         later_nms_thr=later_nms_thr, init_cfg=init_cfg)
        self.freq_bias = FrequencyBias(self.num_obj_cls, self.num_rel_cls)

    def load_statistics(self, statistics: dict) -> None:
        self.freq_bias.load_pred_dist(statistics['pred_dist'])

    def forward(self, proposals, rel_pairs, roi_feats, union_feats, rel_labels=None,
                rel_binarys=None):
        num_objs = [len(p) for p in proposals]
        labels = self.gt_labels(proposals)
        if self.mode == 'predcls':
            if labels is None:
                raise KeyError('predcls: proposals need ground-truth `labels`')
            obj_dists = to_onehot(labels, self.num_obj_cls)
            obj_preds = labels
        else:
            obj_dists = self.detector_logits(proposals)
            best = obj_dists[:, 1:].argmax(1) + 1
            if self.training and labels is not None:
                # as Motifs' teacher forcing: true labels, the prediction where background
                obj_preds = torch.where(labels == 0, best, labels)
            else:
                obj_preds = self.commit_labels(proposals, obj_dists)
        pair_labels = self.pair_labels(obj_preds, rel_pairs, num_objs)
        rel_dists = self.freq_bias.index_with_labels(pair_labels)
        return (list(obj_dists.split(num_objs)),
                list(rel_dists.split([len(p) for p in rel_pairs])), {})
