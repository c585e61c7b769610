"""What every relation predictor shares: the interface, the frequency bias and small helpers.

A predictor receives, for a batch of images,

- ``proposals``: one mmengine ``InstanceData`` per image with ``bboxes`` [N, 4] (xyxy in the
  network input frame), ``labels`` [N] (SGB layout: 0 = background, 1..C; ground truth in
  PredCls/SGCls, the assigned ground truth in SGDet training, absent in SGDet testing),
  ``predict_logits`` [N, C+1] (the frozen detector's class logits, SGB column order, SGCls and
  SGDet), ``boxes_per_cls`` [N, C+1, 4] (SGDet) and ``metainfo['img_shape']`` (h, w);
- ``rel_pairs``: per image LongTensor [M, 2] (subject, object) indices into the proposals;
- ``roi_feats``: [sum N, D] box features; ``union_feats``: [sum M, U] union-box features;
- at training time ``rel_labels`` (per image [M], 0 = background) and ``rel_binarys``
  (per image [N, N]),

and returns ``(obj_logits, rel_logits, extra_losses)``: per image [N, C+1] refined object logits
and [M, P+1] predicate logits (SGB column order), plus a dict of auxiliary losses. Issue 9's
VCTree / Transformer / Causal predictors plug in with the same signature.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmengine.structures import InstanceData
from torch import Tensor, nn

MODES = ('predcls', 'sgcls', 'sgdet')


def check_mode(mode: str, key: str = 'mode') -> str:
    if mode not in MODES:
        raise ValueError(f'`{key}` must be one of {MODES}, got {mode!r}')
    return mode


def to_onehot(labels: Tensor, num_classes: int, fill: float = 1000.) -> Tensor:
    """Logits that put all mass on ``labels`` (SGB ``to_onehot``: +fill / -fill)."""
    out = labels.new_full((labels.shape[0], num_classes), -fill, dtype=torch.float32)
    out[torch.arange(labels.shape[0], device=labels.device), labels.long()] = fill
    return out


def encode_box_info(proposals: Sequence[InstanceData]) -> Tensor:
    """Nine normalised box numbers per box (SGB ``encode_box_info``; +1 widths):
    w/W, h/H, cx/W, cy/H, x1/W, y1/H, x2/W, y2/H, wh/(WH)."""
    infos = []
    for p in proposals:
        h_img, w_img = p.metainfo['img_shape'][:2]
        boxes = p.bboxes
        wh = boxes[:, 2:] - boxes[:, :2] + 1.0
        xy = boxes[:, :2] + 0.5 * wh
        norm = boxes.new_tensor([w_img, h_img])
        infos.append(torch.cat([wh / norm, xy / norm, boxes[:, :2] / norm, boxes[:, 2:] / norm,
                                (wh[:, :1] * wh[:, 1:]) / (w_img * h_img)], dim=1))
    return torch.cat(infos, dim=0)


def layer_init(layer: nn.Linear, std: Optional[float] = None) -> None:
    """SGB ``layer_init``: normal(0, std) when ``std`` is given, else xavier normal; bias 0."""
    if std is not None:
        nn.init.normal_(layer.weight, mean=0, std=std)
    else:
        nn.init.xavier_normal_(layer.weight, gain=1.0)
    nn.init.constant_(layer.bias, 0)


def box_overlaps_per_class(boxes_per_cls: Tensor) -> Tensor:
    """[N, N, K] IoU (+1 widths) between the class-k boxes of every two detections
    (SGB ``nms_overlaps``)."""
    lt = torch.max(boxes_per_cls[:, None, :, :2], boxes_per_cls[None, :, :, :2])
    rb = torch.min(boxes_per_cls[:, None, :, 2:], boxes_per_cls[None, :, :, 2:])
    inter = (rb - lt + 1.0).clamp(min=0).prod(-1)
    wh = boxes_per_cls[..., 2:] - boxes_per_cls[..., :2] + 1.0
    area = wh[..., 0] * wh[..., 1]
    return inter / (area[:, None] + area[None] - inter)


def nms_class_assignment(boxes_per_cls: Tensor, probs: Tensor, thr: float) -> Tensor:
    """One class per detection by greedy class-wise NMS (SGB ``obj_prediction_nms``).

    Repeatedly takes the highest remaining (box, class) probability, gives that class to the
    box and zeroes that class for every box whose class box overlaps it by >= ``thr``.

    Args:
        boxes_per_cls: [N, K, 4] class-specific boxes (column 0 = background).
        probs: [N, K] class probabilities (the background column is ignored).
        thr: IoU threshold.

    Returns:
        LongTensor: [N] classes in 1..K-1.
    """
    n = probs.shape[0]
    labels = torch.zeros(n, dtype=torch.long, device=probs.device)
    if n == 0:
        return labels
    overlap = (box_overlaps_per_class(boxes_per_cls) >= thr).cpu().numpy()
    scores = probs.detach().float().cpu().numpy().copy()
    scores[:, 0] = 0
    fallback = scores[:, 1:].argmax(1) + 1
    out = np.zeros(n, dtype=np.int64)
    for _ in range(n):
        box, cls = np.unravel_index(scores.argmax(), scores.shape)
        if out[box] == 0:
            out[box] = cls
        scores[overlap[box, :, cls], cls] = 0.0
        scores[box] = -1.0
    # A box whose every class was suppressed gets its own best class (SGB would leave it 0,
    # background, which has no meaning for a detection).
    out = np.where(out == 0, fallback, out)
    labels.copy_(torch.from_numpy(out))
    return labels


class FrequencyBias(nn.Module):
    """log p(predicate | subject class, object class) as a trainable lookup table.

    ``Embedding((C+1)^2, P+1)`` indexed by ``s * (C+1) + o`` (SGB ``FrequencyBias``); it starts at
    zero and is filled from the training-split statistics by :meth:`load_pred_dist` when the
    model is initialised for training (a checkpoint restores it at test time).

    Args:
        num_objs: C+1 (background included).
        num_rels: P+1 (background included).
    """

    def __init__(self, num_objs: int, num_rels: int):
        super().__init__()
        self.num_objs = num_objs
        self.num_rels = num_rels
        self.obj_baseline = nn.Embedding(num_objs * num_objs, num_rels)
        nn.init.zeros_(self.obj_baseline.weight)

    def load_pred_dist(self, pred_dist) -> None:
        """Copy ``pred_dist`` [C+1, C+1, P+1] (log-frequencies) into the table."""
        pred_dist = torch.as_tensor(np.asarray(pred_dist), dtype=torch.float32)
        expected = (self.num_objs, self.num_objs, self.num_rels)
        if tuple(pred_dist.shape) != expected:
            raise ValueError(f'frequency statistics have shape {tuple(pred_dist.shape)}, the '
                             f'model expects {expected} (num_classes + 1, num_classes + 1, '
                             'num_predicates + 1); check the relation head `num_classes` and '
                             '`num_predicates` against the dataset')
        with torch.no_grad():
            self.obj_baseline.weight.copy_(pred_dist.view(-1, self.num_rels))

    def index_with_labels(self, pair_labels: Tensor) -> Tensor:
        """[M, P+1] bias of the (subject, object) label pairs [M, 2] (0 = background)."""
        return self.obj_baseline(pair_labels[:, 0] * self.num_objs + pair_labels[:, 1])

    def index_with_probability(self, pair_prob: Tensor) -> Tensor:
        """Soft lookup: sum_ij p_s(i) p_o(j) W[i*(C+1)+j] for pair_prob [M, 2, C+1]."""
        joint = pair_prob[:, 0, :, None] * pair_prob[:, 1, None, :]
        return joint.flatten(1) @ self.obj_baseline.weight

    def forward(self, pair_labels: Tensor) -> Tensor:
        return self.index_with_labels(pair_labels)


class BaseRelationPredictor(BaseModule):
    """Base of the relation predictors (interface in the module docstring).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet', set by the detector.
        num_classes: C, object classes without background.
        num_predicates: P, predicates without background.
        in_channels: size of the box features.
        union_channels: size of the union-box features.
        later_nms_thr: SGDet test, IoU of the class-wise NMS that commits object labels
            (SGB ``TEST.RELATION.LATER_NMS_PREDICTION_THRES``, 0.5 in its X-101 config).
        init_cfg: mmengine init config.
    """
    #: the predictor wants the training-split frequency statistics (``load_statistics``).
    uses_statistics = False
    #: the predictor wants class-name word vectors (``load_word_vectors``).
    uses_word_vectors = False
    #: the predictor reads the box / union-box features (the head skips what is not read, so
    #: that no trainable layer goes without a gradient).
    needs_roi_features = True
    needs_union_features = True

    def __init__(self, mode: str, num_classes: int, num_predicates: int, in_channels: int,
                 union_channels: int, later_nms_thr: float = 0.5,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.mode = check_mode(mode)
        self.num_classes = num_classes
        self.num_obj_cls = num_classes + 1
        self.num_predicates = num_predicates
        self.num_rel_cls = num_predicates + 1
        self.in_channels = in_channels
        self.union_channels = union_channels
        self.later_nms_thr = later_nms_thr

    def load_statistics(self, statistics: dict) -> None:
        """Initialise from the training-split statistics (``fg_matrix``, ``pred_dist``...)."""

    def load_word_vectors(self, obj_classes: Sequence[str], glove_dir: Optional[str],
                          key: str) -> None:
        """Initialise class embeddings from GloVe (``obj_classes`` includes background)."""

    # -- helpers shared by the predictors ---------------------------------------------------
    def gt_labels(self, proposals: Sequence[InstanceData]) -> Optional[Tensor]:
        """Concatenated ``labels`` of the proposals, or None when they carry none."""
        if not all('labels' in p for p in proposals):
            return None
        return torch.cat([p.labels for p in proposals]).long()

    def detector_logits(self, proposals: Sequence[InstanceData]) -> Tensor:
        if not all('predict_logits' in p for p in proposals):
            raise KeyError(f'{self.mode}: proposals need `predict_logits` (the detector\'s class '
                           'logits); the SceneGraphDetector adds them')
        return torch.cat([p.predict_logits for p in proposals]).detach()

    def commit_labels(self, proposals: Sequence[InstanceData], obj_logits: Tensor) -> Tensor:
        """Labels used for pair lookups when no ground truth is given (test time): the best
        foreground class, or class-wise NMS over ``boxes_per_cls`` in SGDet."""
        if self.mode != 'sgdet':
            return obj_logits[:, 1:].argmax(1) + 1
        out, start = [], 0
        for p in proposals:
            n = len(p)
            probs = F.softmax(obj_logits[start:start + n], dim=1)
            out.append(nms_class_assignment(p.boxes_per_cls, probs, self.later_nms_thr))
            start += n
        return torch.cat(out) if out else obj_logits.new_zeros(0, dtype=torch.long)

    @staticmethod
    def pair_labels(obj_labels: Tensor, rel_pairs: Sequence[Tensor],
                    num_objs: Sequence[int]) -> Tensor:
        """[sum M, 2] labels of (subject, object) of every pair, batch-global."""
        out, start = [], 0
        for pairs, n in zip(rel_pairs, num_objs):
            out.append(obj_labels[start:start + n][pairs])
            start += n
        return torch.cat(out, dim=0)

    def forward(self, proposals: List[InstanceData], rel_pairs: List[Tensor], roi_feats: Tensor,
                union_feats: Optional[Tensor], rel_labels: Optional[List[Tensor]] = None,
                rel_binarys: Optional[List[Tensor]] = None
                ) -> Tuple[List[Tensor], List[Tensor], Dict[str, Tensor]]:
        raise NotImplementedError
