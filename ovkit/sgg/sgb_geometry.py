"""maskrcnn-benchmark's detector geometry as mmdet modules: anchors, box coder, RoI levels.

SGB's pretrained VG150 Faster R-CNN was trained with maskrcnn-benchmark, whose box geometry
(a box ``[x1, x2]`` covers ``x2 - x1 + 1`` pixels) mmdet 3 does not reproduce, so its
converted weights need these three pieces to compute what maskrcnn-benchmark computed:

- ``SGBAnchorGenerator``: ``generate_anchors`` rounds each aspect ratio's width and height on
  the ``stride x stride`` base window and only then scales it, around the centre
  ``(stride - 1) / 2``. For stride 4, size 32, ratio 0.2323 that is ``[-30, -6, 33, 9]``;
  mmdet's ``AnchorGenerator`` gives ``[-33.2, -7.7, 33.2, 7.7]`` and its
  ``LegacyAnchorGenerator(center_offset=0.5)`` ``[-31, -6, 34, 9]``.
- ``SGBDeltaXYWHBBoxCoder``: ``BoxCoder`` with ``+1`` widths, ``x2 = cx + w / 2 - 1``,
  ``dw``/``dh`` clamped from above only (``log(1000 / 16)``), boxes clipped to ``W - 1``.
  mmdet's ``LegacyDeltaXYWHBBoxCoder`` decodes without the ``-/+ 0.5`` (a deliberate mmdet
  choice, commented in its ``legacy_delta2bbox``): its boxes are 1 pixel wider and taller, and
  it also clamps ``dw``/``dh`` from below.
- ``SGBRoIExtractor``: the FPN level of a box from ``sqrt((w + 1) (h + 1))`` with
  ``floor(4 + log2(s / 224 + 1e-6))`` (``LevelMapper``); mmdet's ``SingleRoIExtractor`` uses
  ``sqrt(w h)`` and ``floor(log2(s / 56 + 1e-6))``, which moves boxes near the level borders.

mmdet supplies everything else (``RPNHead``, ``RoIAlign(aligned=False)`` = maskrcnn's
``ROIAlign``, NMS with ``offset=1`` = maskrcnn's ``nms``); docs/sgg.md lists the settings.
"""
import math
from typing import Optional, Sequence, Union

import numpy as np
import torch
from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
from mmdet.models.task_modules.coders.base_bbox_coder import BaseBBoxCoder
from mmdet.models.task_modules.prior_generators import AnchorGenerator
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures.bbox import HorizontalBoxes, get_box_tensor
from torch import Tensor

# RPN of SGB's configs/e2e_relation_X_101_32_8_FPN_1x.yaml (ASPECT_RATIOS from neural-motifs)
SGB_VG_ANCHORS = dict(strides=(4, 8, 16, 32, 64), sizes=(32, 64, 128, 256, 512),
                      ratios=(0.23232838, 0.63365731, 1.28478321, 3.15089189))


def sgb_cell_anchors(stride: float, sizes: Sequence[float], ratios: Sequence[float]
                     ) -> np.ndarray:
    """maskrcnn-benchmark's ``generate_anchors(stride, sizes, aspect_ratios)``, float64.

    The base window is ``[0, 0, stride - 1, stride - 1]``; for each ratio (height / width)
    its width becomes ``round(sqrt(stride^2 / ratio))`` and its height ``round(width *
    ratio)`` (numpy's round half to even), then each is scaled by ``size / stride``; anchors
    are ``centre -/+ (side - 1) / 2`` with centre ``(stride - 1) / 2``. Rows are ratio-major.

    Args:
        stride: the level's anchor stride (also the base window size).
        sizes: anchor sizes of the level (sqrt of the area before ratio rounding).
        ratios: aspect ratios, height / width.
    """
    scales = np.asarray(sizes, dtype=np.float64) / stride
    ratios = np.asarray(ratios, dtype=np.float64)
    side = float(stride)
    ctr = 0.5 * (side - 1)
    ws = np.round(np.sqrt(side * side / ratios))
    hs = np.round(ws * ratios)
    ws = (ws[:, None] * scales[None, :]).reshape(-1)
    hs = (hs[:, None] * scales[None, :]).reshape(-1)
    return np.stack([ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1),
                     ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)], axis=1)


@TASK_UTILS.register_module()
class SGBAnchorGenerator(AnchorGenerator):
    """mmdet's ``AnchorGenerator`` with maskrcnn-benchmark's cell anchors (SGB's detector).

    The grid (``shift = index * stride``, anchors per location in cell order) is mmdet's and
    already maskrcnn-benchmark's; only the cell anchors differ (see the module docstring).
    Written here because mmdet has no generator with ``generate_anchors``' rounding.
    Give the yaml's ``RPN.ANCHOR_SIZES`` as ``sizes`` (one per level, or a tuple per level),
    or mmdet-style ``scales`` (``size = stride * scale``).

    Args:
        strides: ``RPN.ANCHOR_STRIDE`` (SGB: 4, 8, 16, 32, 64).
        ratios: ``RPN.ASPECT_RATIOS``, height / width.
        sizes: ``RPN.ANCHOR_SIZES`` (SGB: 32, 64, 128, 256, 512); or None with ``scales``.
        scales: anchor scales of every level (SGB: [8]); or None with ``sizes``.
        use_box_type: wrap the anchors in mmdet's ``HorizontalBoxes``.
    """

    def __init__(self,
                 strides: Sequence[int],
                 ratios: Sequence[float],
                 sizes: Optional[Sequence[Union[float, Sequence[float]]]] = None,
                 scales: Optional[Sequence[float]] = None,
                 use_box_type: bool = False) -> None:
        if (sizes is None) == (scales is None):
            raise ValueError('SGBAnchorGenerator: give exactly one of sizes (the yaml\'s '
                             'RPN.ANCHOR_SIZES, e.g. (32, 64, 128, 256, 512)) and scales '
                             '(size / stride, e.g. [8])')
        if any(isinstance(s, (tuple, list)) for s in strides):
            raise ValueError('SGBAnchorGenerator: maskrcnn-benchmark strides are one int per '
                             f'level, got {strides}')
        if sizes is None:
            sizes = [[s * float(k) for k in scales] for s in strides]
        else:
            if len(sizes) != len(strides):
                raise ValueError(f'SGBAnchorGenerator: {len(sizes)} sizes for {len(strides)} '
                                 'strides (maskrcnn-benchmark: one size per FPN level)')
            sizes = [list(s) if isinstance(s, (tuple, list)) else [s] for s in sizes]
        if len({len(s) for s in sizes}) != 1:
            raise ValueError('SGBAnchorGenerator: every level needs as many sizes')
        # kept in float64 (maskrcnn computes in numpy float64; mmdet stores float32 tensors)
        self.sgb_sizes = [[float(x) for x in s] for s in sizes]
        self.sgb_ratios = [float(r) for r in ratios]
        super().__init__(strides=list(strides), ratios=list(ratios),
                         scales=[x / strides[0] for x in self.sgb_sizes[0]],
                         use_box_type=use_box_type)

    def gen_base_anchors(self):
        """The cell anchors of every level (maskrcnn-benchmark's ``cell_anchors`` buffers)."""
        return [torch.from_numpy(sgb_cell_anchors(stride[0], sizes, self.sgb_ratios)).float()
                for stride, sizes in zip(self.strides, self.sgb_sizes)]

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(strides={[s[0] for s in self.strides]}, '
                f'sizes={self.sgb_sizes}, ratios={self.sgb_ratios})')


@TASK_UTILS.register_module()
class SGBDeltaXYWHBBoxCoder(BaseBBoxCoder):
    """maskrcnn-benchmark's ``BoxCoder`` (``+1`` widths) as an mmdet box coder.

    Encode and decode follow ``modeling/box_coder.py`` operation by operation; the
    ``weights`` are ``1 / target_stds`` (RPN: stds 1 = weights 1; box head: stds
    [0.1, 0.1, 0.2, 0.2] = weights (10, 10, 5, 5)). Decoded boxes are clipped to
    ``[0, W - 1] x [0, H - 1]`` (``clip_to_image``) when ``max_shape`` is given. Written here
    because mmdet's ``LegacyDeltaXYWHBBoxCoder`` decodes differently (module docstring).

    Args:
        target_means: must be zeros (maskrcnn-benchmark has no means).
        target_stds: ``1 / BBOX_REG_WEIGHTS``.
        bbox_xform_clip: upper clamp of ``dw``/``dh`` (maskrcnn: ``log(1000 / 16)``).
        **kwargs: ``use_box_type`` etc., as mmdet's ``BaseBBoxCoder``.
    """

    def __init__(self,
                 target_means: Sequence[float] = (0., 0., 0., 0.),
                 target_stds: Sequence[float] = (1., 1., 1., 1.),
                 bbox_xform_clip: float = math.log(1000. / 16),
                 **kwargs) -> None:
        super().__init__(**kwargs)
        if any(float(m) != 0 for m in target_means):
            raise ValueError(f'SGBDeltaXYWHBBoxCoder: target_means must be zeros, got '
                             f'{target_means} (maskrcnn-benchmark\'s BoxCoder has none)')
        self.means = tuple(float(m) for m in target_means)
        self.stds = tuple(float(s) for s in target_stds)
        self.weights = tuple(1.0 / s for s in self.stds)
        self.bbox_xform_clip = bbox_xform_clip

    def encode(self, bboxes, gt_bboxes) -> Tensor:
        """Deltas that turn ``bboxes`` (proposals) into ``gt_bboxes`` (``BoxCoder.encode``).

        Args:
            bboxes: [N, 4] source boxes (tensor or mmdet boxes).
            gt_bboxes: [N, 4] target boxes.
        """
        proposals, reference = get_box_tensor(bboxes), get_box_tensor(gt_bboxes)
        ex_w = proposals[:, 2] - proposals[:, 0] + 1
        ex_h = proposals[:, 3] - proposals[:, 1] + 1
        ex_cx = proposals[:, 0] + 0.5 * ex_w
        ex_cy = proposals[:, 1] + 0.5 * ex_h
        gt_w = reference[:, 2] - reference[:, 0] + 1
        gt_h = reference[:, 3] - reference[:, 1] + 1
        gt_cx = reference[:, 0] + 0.5 * gt_w
        gt_cy = reference[:, 1] + 0.5 * gt_h
        wx, wy, ww, wh = self.weights
        return torch.stack((wx * (gt_cx - ex_cx) / ex_w, wy * (gt_cy - ex_cy) / ex_h,
                            ww * torch.log(gt_w / ex_w), wh * torch.log(gt_h / ex_h)), dim=1)

    def decode(self, bboxes, pred_bboxes: Tensor, max_shape=None, wh_ratio_clip=None):
        """Boxes from reference boxes and deltas (``BoxCoder.decode`` + ``clip_to_image``).

        Args:
            bboxes: [N, 4] reference boxes (anchors or proposals).
            pred_bboxes: [N, 4 * k] deltas.
            max_shape: (H, W[, C]) of the image to clip to, or None.
            wh_ratio_clip: ignored (maskrcnn clamps at ``bbox_xform_clip``); kept for mmdet's
                call signature.
        """
        boxes = get_box_tensor(bboxes)
        if pred_bboxes.dim() != 2 or boxes.dim() != 2 or pred_bboxes.size(0) != boxes.size(0):
            raise ValueError(f'SGBDeltaXYWHBBoxCoder.decode: expects [N, 4] boxes and [N, 4k] '
                             f'deltas, got {tuple(boxes.shape)} and {tuple(pred_bboxes.shape)}')
        boxes = boxes.to(pred_bboxes.dtype)
        widths = boxes[:, 2] - boxes[:, 0] + 1
        heights = boxes[:, 3] - boxes[:, 1] + 1
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = pred_bboxes[:, 0::4] / wx
        dy = pred_bboxes[:, 1::4] / wy
        dw = torch.clamp(pred_bboxes[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(pred_bboxes[:, 3::4] / wh, max=self.bbox_xform_clip)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        pred_w = torch.exp(dw) * widths[:, None]
        pred_h = torch.exp(dh) * heights[:, None]
        out = torch.zeros_like(pred_bboxes)
        out[:, 0::4] = pred_ctr_x - 0.5 * pred_w
        out[:, 1::4] = pred_ctr_y - 0.5 * pred_h
        out[:, 2::4] = pred_ctr_x + 0.5 * pred_w - 1
        out[:, 3::4] = pred_ctr_y + 0.5 * pred_h - 1
        if max_shape is not None:
            if torch.is_tensor(max_shape):
                max_shape = max_shape.tolist()
            if isinstance(max_shape[0], (tuple, list)):
                raise ValueError('SGBDeltaXYWHBBoxCoder.decode: one (H, W) max_shape per call')
            h, w = float(max_shape[0]), float(max_shape[1])
            out[:, 0::4] = out[:, 0::4].clamp(min=0, max=w - 1)
            out[:, 1::4] = out[:, 1::4].clamp(min=0, max=h - 1)
            out[:, 2::4] = out[:, 2::4].clamp(min=0, max=w - 1)
            out[:, 3::4] = out[:, 3::4].clamp(min=0, max=h - 1)
        if self.use_box_type:
            if out.size(-1) != 4:
                raise ValueError('SGBDeltaXYWHBBoxCoder: use_box_type needs [N, 4] deltas')
            out = HorizontalBoxes(out)
        return out


@MODELS.register_module()
class SGBRoIExtractor(SingleRoIExtractor):
    """mmdet's ``SingleRoIExtractor`` with maskrcnn-benchmark's ``LevelMapper``.

    Level of a box: ``floor(canonical_level + log2(sqrt((w + 1)(h + 1)) / canonical_scale +
    eps))``, clamped to the levels given by ``featmap_strides`` (``log2(stride)``), as SGB's
    ``Pooler``. Written here because mmdet's level rule has no ``+1`` and another form.

    Args:
        roi_layer: mmcv RoI layer config (SGB: ``RoIAlign(7, sampling_ratio=2,
            aligned=False)``).
        out_channels: channels of the features.
        featmap_strides: strides of the pooled levels (SGB: 4, 8, 16, 32).
        canonical_scale: ``s0`` of the FPN paper (maskrcnn: 224).
        canonical_level: ``k0`` (maskrcnn: 4).
        eps: added inside the log (maskrcnn: 1e-6).
        init_cfg: mmengine init config.
    """

    def __init__(self,
                 roi_layer: dict,
                 out_channels: int,
                 featmap_strides: Sequence[int],
                 canonical_scale: float = 224,
                 canonical_level: int = 4,
                 eps: float = 1e-6,
                 init_cfg=None) -> None:
        super().__init__(roi_layer=roi_layer, out_channels=out_channels,
                         featmap_strides=featmap_strides, init_cfg=init_cfg)
        levels = [math.log2(s) for s in featmap_strides]
        if any(abs(lv - round(lv)) > 1e-9 for lv in levels) or \
                [round(lv) for lv in levels] != list(range(round(levels[0]),
                                                           round(levels[0]) + len(levels))):
            raise ValueError(f'SGBRoIExtractor: featmap_strides must be consecutive powers of '
                             f'two (maskrcnn-benchmark\'s Pooler), got {featmap_strides}')
        self.k_min = round(levels[0])
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.eps = eps

    def map_roi_levels(self, rois: Tensor, num_levels: int) -> Tensor:
        """Level index (0-based) of each RoI [K, 5] (batch index, x1, y1, x2, y2)."""
        area = (rois[:, 3] - rois[:, 1] + 1) * (rois[:, 4] - rois[:, 2] + 1)
        s = torch.sqrt(area)
        target = torch.floor(self.canonical_level + torch.log2(s / self.canonical_scale
                                                               + self.eps))
        target = torch.clamp(target, min=self.k_min, max=self.k_min + num_levels - 1)
        return target.to(torch.int64) - self.k_min
