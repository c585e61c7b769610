"""Box and union-box features of the relation head (SGB ``roi_relation_feature_extractors.py``).

Pooling reuses mmdet's RoI extractors (mmcv ``RoIAlign``); what mmdet lacks is written here:
the all-levels extractor (SGB ``POOLING_ALL_LEVELS``: pool every FPN level, concatenate,
conv3x3 back to the FPN width; the detector is frozen, so one fixed level per box would leave
nothing to adapt) and the rectangle spatial masks of each pair drawn on a 27x27 grid of the
image and turned into a 7x7 map by two convolutions, added to the pooled union feature before
the box MLP.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import ConvModule
from mmdet.models.roi_heads.roi_extractors import BaseRoIExtractor
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox2roi
from mmengine.model import BaseModule
from torch import Tensor, nn


@MODELS.register_module()
class AllLevelsRoIExtractor(BaseRoIExtractor):
    """RoIAlign of every RoI on every feature level, concatenated, conv3x3 + ReLU to
    ``out_channels`` (SGB's ``Pooler(cat_all_levels=True)``).

    Args:
        roi_layer: mmcv RoI layer config, e.g. ``dict(type='RoIAlign', output_size=7,
            sampling_ratio=2, aligned=False)``.
        out_channels: channels of each input level and of the output.
        featmap_strides: strides of the levels used.
        init_cfg: mmengine init config.
    """

    def __init__(self, roi_layer: dict, out_channels: int, featmap_strides: List[int],
                 init_cfg: Optional[dict] = None):
        super().__init__(roi_layer=roi_layer, out_channels=out_channels,
                         featmap_strides=featmap_strides, init_cfg=init_cfg)
        self.reduce_channel = ConvModule(
            out_channels * len(featmap_strides), out_channels, 3, padding=1,
            act_cfg=dict(type='ReLU'))

    def forward(self, feats: Tuple[Tensor], rois: Tensor,
                roi_scale_factor: Optional[float] = None) -> Tensor:
        """Pool ``rois`` ([K, 5], batch index first) on every level of ``feats``."""
        if roi_scale_factor is not None:
            rois = self.roi_rescale(rois, roi_scale_factor)
        pooled = [layer(feats[i], rois) for i, layer in enumerate(self.roi_layers)]
        return self.reduce_channel(torch.cat(pooled, dim=1))


def _fc_stack(in_features: int, dims: Sequence[int]) -> nn.Sequential:
    layers = []
    for dim in dims:
        layers += [nn.Linear(in_features, dim), nn.ReLU(inplace=True)]
        in_features = dim
    return nn.Sequential(*layers)


def copy_shared_fcs(fcs: nn.Sequential, shared_fcs: nn.ModuleList) -> None:
    """Copy a detector bbox head's ``shared_fcs`` (mmdet Shared2FCBBoxHead) into ``fcs``.

    SGB initialises the relation head's box and union MLPs from the detector's box head
    (``load_mapping`` in ``tools/relation_train_net.py``); the MLPs then train.
    """
    linears = [m for m in fcs if isinstance(m, nn.Linear)]
    if len(linears) != len(shared_fcs):
        raise ValueError(f'the relation MLP has {len(linears)} layers, the detector bbox head '
                         f'{len(shared_fcs)}; set the relation head `mlp_dims` to match it')
    for dst, src in zip(linears, shared_fcs):
        if dst.weight.shape != src.weight.shape:
            raise ValueError(
                f'cannot initialise the relation MLP {tuple(dst.weight.shape)} from the detector '
                f'bbox head {tuple(src.weight.shape)}: set the relation head `in_channels`, '
                '`roi_feat_size` and `mlp_dims` to the detector\'s bbox head')
        with torch.no_grad():
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)


@MODELS.register_module()
class RelationBoxFeatureExtractor(BaseModule):
    """RoI feature of each box: mmdet RoI extractor -> flatten -> 2 fc + ReLU (SGB fc6/fc7).

    Args:
        roi_extractor: mmdet RoI extractor config (SGB: per-level RoIAlign, 7x7).
        in_channels: FPN channels.
        roi_feat_size: pooled size.
        mlp_dims: output sizes of the fc layers (SGB: 4096, 4096).
        init_cfg: mmengine init config.
    """

    def __init__(self, roi_extractor: dict, in_channels: int = 256, roi_feat_size: int = 7,
                 mlp_dims: Sequence[int] = (4096, 4096), init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.roi_extractor = MODELS.build(roi_extractor)
        self.fcs = _fc_stack(in_channels * roi_feat_size ** 2, mlp_dims)
        self.out_channels = mlp_dims[-1]

    def forward(self, feats: Tuple[Tensor], boxes: List[Tensor]) -> Tensor:
        """Features [sum N_i, out_channels] of the per-image boxes ([N_i, 4] xyxy)."""
        rois = bbox2roi(boxes)
        pooled = self.roi_extractor(feats[:self.roi_extractor.num_inputs], rois)
        return self.fcs(pooled.flatten(1))


def pair_rect_masks(boxes: Tensor, pairs: Tensor, img_shape: Sequence[int],
                    rect_size: int = 27) -> Tensor:
    """Head and tail rectangles of each pair on a ``rect_size`` grid covering the image.

    A cell (x, y) is inside a box when floor(x1) <= x <= ceil(x2) and floor(y1) <= y <= ceil(y2)
    after scaling the box from the image (``img_shape`` = (h, w)) to the grid, as SGB does.

    Args:
        boxes: [N, 4] xyxy boxes in the image.
        pairs: [M, 2] (head, tail) indices.
        img_shape: (h, w) of the image the boxes live in.
        rect_size: grid size (SGB: 4 * pooler resolution - 1 = 27).

    Returns:
        Tensor: [M, 2, rect_size, rect_size] float masks (head, tail).
    """
    h, w = img_shape[:2]
    scale = boxes.new_tensor([rect_size / w, rect_size / h, rect_size / w, rect_size / h])
    grid_boxes = boxes * scale
    lo = grid_boxes[:, :2].floor()
    hi = grid_boxes[:, 2:].ceil()
    rng = torch.arange(rect_size, device=boxes.device, dtype=boxes.dtype)

    def rect(idx):
        in_x = (rng[None, :] >= lo[idx, 0:1]) & (rng[None, :] <= hi[idx, 0:1])  # [M, S]
        in_y = (rng[None, :] >= lo[idx, 1:2]) & (rng[None, :] <= hi[idx, 1:2])
        return (in_y[:, :, None] & in_x[:, None, :]).to(boxes.dtype)  # [M, S(y), S(x)]

    return torch.stack([rect(pairs[:, 0]), rect(pairs[:, 1])], dim=1)


@MODELS.register_module()
class RelationUnionFeatureExtractor(BaseModule):
    """Union-box feature of each pair (SGB ``RelationFeatureExtractor``).

    RoI feature of the union box (all FPN levels by default) plus a 7x7 map of the pair's
    rectangle masks (conv7x7/2, ReLU, BN, maxpool3/2, conv3x3, ReLU, BN), then 2 fc + ReLU.

    Args:
        roi_extractor: mmdet RoI extractor config (SGB: ``AllLevelsRoIExtractor``).
        in_channels: FPN channels (the rectangle branch ends with this many).
        roi_feat_size: pooled size (the rectangle grid is 4 * roi_feat_size - 1).
        mlp_dims: output sizes of the fc layers (SGB: 4096, 4096).
        bn_momentum: momentum of the rectangle branch's BatchNorms (SGB: 0.01).
        init_cfg: mmengine init config.
    """

    def __init__(self, roi_extractor: dict, in_channels: int = 256, roi_feat_size: int = 7,
                 mlp_dims: Sequence[int] = (4096, 4096), bn_momentum: float = 0.01,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.roi_extractor = MODELS.build(roi_extractor)
        self.rect_size = roi_feat_size * 4 - 1
        mid = in_channels // 2
        self.rect_conv = nn.Sequential(
            nn.Conv2d(2, mid, kernel_size=7, stride=2, padding=3),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(mid, momentum=bn_momentum),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Conv2d(mid, in_channels, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(in_channels, momentum=bn_momentum),
        )
        self.fcs = _fc_stack(in_channels * roi_feat_size ** 2, mlp_dims)
        self.out_channels = mlp_dims[-1]

    def forward(self, feats: Tuple[Tensor], boxes: List[Tensor], pairs: List[Tensor],
                img_shapes: List[Sequence[int]]) -> Tensor:
        """Features [sum M_i, out_channels] of the per-image pairs.

        Args:
            feats: FPN levels.
            boxes: per image [N_i, 4] xyxy boxes.
            pairs: per image [M_i, 2] (head, tail) indices.
            img_shapes: per image (h, w) of the (resized) input image.
        """
        unions, rects = [], []
        for b, p, shape in zip(boxes, pairs, img_shapes):
            head, tail = b[p[:, 0]], b[p[:, 1]]
            unions.append(torch.cat([torch.min(head[:, :2], tail[:, :2]),
                                     torch.max(head[:, 2:], tail[:, 2:])], dim=1))
            rects.append(pair_rect_masks(b, p, shape, self.rect_size))
        rois = bbox2roi(unions)
        union_feats = self.roi_extractor(feats[:self.roi_extractor.num_inputs], rois)
        rect_feats = self.rect_conv(torch.cat(rects, dim=0))
        return self.fcs((union_feats + rect_feats).flatten(1))
