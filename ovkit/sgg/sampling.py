"""Relation pair proposal (test) and fg/bg pair sampling (train), SGB's rules.

mmdet samples boxes, not box pairs, so this is written by hand after SGB's
``relation_head/sampling.py`` (``RelationSampling``): all ordered pairs at test time, ground-truth
pairs plus random background pairs for PredCls/SGCls training, and for SGDet training the
proposal pairs that match a ground-truth relation (same label, IoU > 0.5 on both ends, at most
``num_sample_per_gt_rel`` per relation, drawn in proportion to the IoU product).

Object labels here follow SGB's layout: 0 is background, 1..C the classes.
"""
from typing import NamedTuple

import torch
from mmdet.registry import TASK_UTILS
from torch import Tensor


def box_iou_legacy(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU with SGB's ``+1`` pixel widths (maskrcnn-benchmark ``boxlist_iou``).

    mmdet's ``bbox_overlaps`` has no ``+1`` convention and mmcv's ``offset=1`` variant has no
    CPU kernel, so this small torch version is used for the sampler's matching.

    Args:
        boxes1: [N, 4] xyxy.
        boxes2: [M, 4] xyxy.

    Returns:
        Tensor: [N, M] IoU.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0] + 1) * (boxes1[:, 3] - boxes1[:, 1] + 1)
    area2 = (boxes2[:, 2] - boxes2[:, 0] + 1) * (boxes2[:, 3] - boxes2[:, 1] + 1)
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


class SampledPairs(NamedTuple):
    """Training pairs of one image.

    Attributes:
        pairs: LongTensor [M, 2] (subject, object) indices into the image's proposals.
        labels: LongTensor [M] predicate per pair, 0 = background.
        binary: LongTensor [N, N] symmetric "related or not" matrix (VCTree's auxiliary target).
    """
    pairs: Tensor
    labels: Tensor
    binary: Tensor


def relation_matrix(num_boxes: int, gt_pairs: Tensor, gt_predicates: Tensor) -> Tensor:
    """Dense [N, N] predicate matrix of the ground truth (0 = no relation).

    As SGB's ``relation`` field, one predicate survives per ordered pair (the dataset already
    keeps one random predicate per pair at train time).
    """
    mat = gt_pairs.new_zeros((num_boxes, num_boxes))
    if gt_pairs.numel():
        mat[gt_pairs[:, 0], gt_pairs[:, 1]] = gt_predicates.to(mat.dtype)
    return mat


@TASK_UTILS.register_module()
class RelationPairSampler:
    """Pairs of boxes for the relation head.

    Args:
        batch_size_per_image: pairs per image at train time (SGB: 1024).
        positive_fraction: at most this fraction of them are foreground (SGB: 0.25).
        fg_iou_thr: SGDet, a proposal matches a ground-truth box of its label above this IoU.
        num_sample_per_gt_rel: SGDet, at most this many proposal pairs per ground-truth relation.
        require_overlap: SGDet training, only pairs of intersecting proposals
            (SGB ``REQUIRE_BOX_OVERLAP``; off in its X-101 config).
        test_require_overlap: SGDet testing, only intersecting pairs
            (SGB ``TEST.RELATION.REQUIRE_OVERLAP``; off).
    """

    def __init__(self, batch_size_per_image: int = 1024, positive_fraction: float = 0.25,
                 fg_iou_thr: float = 0.5, num_sample_per_gt_rel: int = 4,
                 require_overlap: bool = False, test_require_overlap: bool = False):
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction
        self.fg_iou_thr = fg_iou_thr
        self.num_sample_per_gt_rel = num_sample_per_gt_rel
        self.require_overlap = require_overlap
        self.test_require_overlap = test_require_overlap

    @property
    def num_pos_per_image(self) -> int:
        return int(self.batch_size_per_image * self.positive_fraction)

    def test_pairs(self, boxes: Tensor, use_gt_box: bool = True) -> Tensor:
        """All ordered pairs i != j; SGB's placeholder [[0, 0]] for a single box.

        Args:
            boxes: [N, 4] boxes of one image.
            use_gt_box: False in SGDet, where ``test_require_overlap`` applies.

        Returns:
            LongTensor: [M, 2]; [0, 2] for an image without boxes.
        """
        n = boxes.shape[0]
        device = boxes.device
        if n == 0:
            return torch.zeros((0, 2), dtype=torch.long, device=device)
        cand = ~torch.eye(n, dtype=torch.bool, device=device)
        if not use_gt_box and self.test_require_overlap:
            cand &= box_iou_legacy(boxes, boxes) > 0
        pairs = cand.nonzero()
        if pairs.shape[0] == 0:
            pairs = torch.zeros((1, 2), dtype=torch.long, device=device)
        return pairs

    def sample_gt_boxes(self, num_boxes: int, gt_pairs: Tensor,
                        gt_predicates: Tensor) -> SampledPairs:
        """PredCls/SGCls training pairs: the proposals are the ground-truth boxes.

        Foreground: every ground-truth pair (a random subset when there are more than
        ``batch_size_per_image * positive_fraction``); background: random other ordered pairs
        filling the batch up to ``batch_size_per_image``.

        Args:
            num_boxes: N, the number of ground-truth boxes.
            gt_pairs: LongTensor [R, 2].
            gt_predicates: LongTensor [R] in 1..P.
        """
        device = gt_pairs.device
        mat = relation_matrix(num_boxes, gt_pairs, gt_predicates)
        fg = (mat > 0).nonzero()
        fg_labels = mat[fg[:, 0], fg[:, 1]]
        binary = torch.zeros((num_boxes, num_boxes), dtype=torch.long, device=device)
        binary[fg[:, 0], fg[:, 1]] = 1
        binary[fg[:, 1], fg[:, 0]] = 1

        possible = ~torch.eye(num_boxes, dtype=torch.bool, device=device) & (mat == 0)
        bg = possible.nonzero()
        if fg.shape[0] > self.num_pos_per_image:
            keep = torch.randperm(fg.shape[0], device=device)[:self.num_pos_per_image]
            fg, fg_labels = fg[keep], fg_labels[keep]
        num_bg = self.batch_size_per_image - fg.shape[0]
        bg = bg[torch.randperm(bg.shape[0], device=device)[:num_bg]]
        pairs = torch.cat([fg, bg], dim=0)
        labels = torch.cat([fg_labels.long(), fg_labels.new_zeros(bg.shape[0]).long()])
        if pairs.shape[0] == 0:
            # fewer than two boxes: SGB's placeholder pair, labelled background.
            pairs = torch.zeros((1, 2), dtype=torch.long, device=device)
            labels = torch.zeros(1, dtype=torch.long, device=device)
        return SampledPairs(pairs, labels, binary)

    def sample_detections(self, boxes: Tensor, labels: Tensor, gt_boxes: Tensor,
                          gt_labels: Tensor, gt_pairs: Tensor,
                          gt_predicates: Tensor) -> SampledPairs:
        """SGDet training pairs over detected boxes (SGB ``detect_relsample``).

        Args:
            boxes: [N, 4] detections (after the detector's NMS).
            labels: [N] ground-truth label assigned to each detection, 0 = background.
            gt_boxes: [G, 4] ground-truth boxes.
            gt_labels: [G] their labels in 1..C.
            gt_pairs: LongTensor [R, 2] into ``gt_boxes``.
            gt_predicates: LongTensor [R] in 1..P.
        """
        device = boxes.device
        num_prp = boxes.shape[0]
        ious = box_iou_legacy(gt_boxes, boxes)  # [G, N]
        is_match = (gt_labels[:, None] == labels[None, :]) & (ious > self.fg_iou_thr)
        if self.require_overlap:
            self_iou = box_iou_legacy(boxes, boxes)
            possible = (self_iou > 0) & (self_iou < 1)
        else:
            possible = ~torch.eye(num_prp, dtype=torch.bool, device=device)
        possible[labels == 0] = False
        possible[:, labels == 0] = False

        mat = relation_matrix(gt_boxes.shape[0], gt_pairs, gt_predicates)
        tgt = (mat > 0).nonzero()
        binary = torch.zeros((num_prp, num_prp), dtype=torch.long, device=device)
        fg_parts = []
        for head, tail in tgt.tolist():
            heads = is_match[head].nonzero()[:, 0]
            tails = is_match[tail].nonzero()[:, 0]
            if heads.numel() == 0 or tails.numel() == 0:
                continue
            hh = heads[:, None].expand(-1, tails.numel()).reshape(-1)
            tt = tails[None, :].expand(heads.numel(), -1).reshape(-1)
            binary[hh, tt] = 1
            binary[tt, hh] = 1
            valid = hh != tt
            hh, tt = hh[valid], tt[valid]
            if hh.numel() == 0:
                continue
            possible[hh, tt] = False
            if hh.numel() > self.num_sample_per_gt_rel:
                # SGB draws without replacement in proportion to the IoU product.
                weight = ious[head, hh] * ious[tail, tt]
                keep = torch.multinomial(weight, self.num_sample_per_gt_rel, replacement=False)
                hh, tt = hh[keep], tt[keep]
            rel = torch.full_like(hh, int(mat[head, tail]))
            fg_parts.append(torch.stack([hh, tt, rel], dim=1))
        fg = (torch.cat(fg_parts) if fg_parts else
              torch.zeros((0, 3), dtype=torch.long, device=device))
        if fg.shape[0] > self.num_pos_per_image:
            fg = fg[torch.randperm(fg.shape[0], device=device)[:self.num_pos_per_image]]

        bg = possible.nonzero()
        num_bg = min(self.batch_size_per_image - fg.shape[0], bg.shape[0])
        bg = bg[torch.randperm(bg.shape[0], device=device)[:num_bg]]
        bg = torch.cat([bg, bg.new_zeros((bg.shape[0], 1))], dim=1)
        triplets = torch.cat([fg, bg], dim=0)
        if triplets.shape[0] == 0:
            triplets = torch.zeros((1, 3), dtype=torch.long, device=device)
        return SampledPairs(triplets[:, :2].contiguous(), triplets[:, 2].contiguous(), binary)

    def __repr__(self):
        return (f'{type(self).__name__}(batch_size_per_image={self.batch_size_per_image}, '
                f'positive_fraction={self.positive_fraction}, fg_iou_thr={self.fg_iou_thr}, '
                f'num_sample_per_gt_rel={self.num_sample_per_gt_rel})')
