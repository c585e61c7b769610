"""Classifier head for :class:`OVKitViT`, with timm's ``head``/``head_dist`` names."""
from typing import Tuple

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS


@MODELS.register_module()
class OVKitViTClsHead(ClsHead):
    """Linear classifier on the backbone's pooled feature; DeiT's distilled head too.

    mmpretrain's ``ClsHead`` supplies the loss, accuracy and predictions; this adds timm's
    ``head`` (and ``head_dist``) so a timm state dict's ``head.*`` keys load under
    ``head.head.*``. A distilled model's score is ``(head(cls) + head_dist(dist)) / 2``,
    in training too (timm's default ``distilled_training=False``): mmpretrain has no teacher
    to distil from, so the distillation token is fine-tuned on the labels.

    Args:
        num_classes: classes (None: an error explaining the image-folder config).
        in_channels: feature width (the backbone's ``num_features``).
        distilled: expect ``(cls, dist)`` features and keep ``head_dist``.
        drop_rate: dropout before the linear layers (timm's ``head_drop``).
        init_std: std of the truncated-normal weight init (timm: 0.02); 0 gives zeros (JAX).
        **kwargs: ``ClsHead`` arguments (loss, topk, cal_acc, init_cfg).
    """

    def __init__(self, num_classes: int, in_channels: int, distilled: bool = False,
                 drop_rate: float = 0., init_std: float = .02, **kwargs):
        super().__init__(**kwargs)
        if num_classes is None:  # what presets.folder_classes leaves when the folder is absent
            raise ValueError(
                'OVKitViTClsHead: num_classes is None: the config counts the classes of its '
                'image folder (data_root/train/<class>/), which did not exist when the config '
                'was read. Set data_root in the config (or DATA_ROOT=... where the config '
                'reads it) to a folder of that layout.')
        if num_classes <= 0:
            raise ValueError(f'OVKitViTClsHead: num_classes must be positive, got {num_classes}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.distilled = distilled
        self.init_std = init_std
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(in_channels, num_classes)
        self.head_dist = nn.Linear(in_channels, num_classes) if distilled else None

    def init_weights(self):
        """Truncated normal (timm) or zeros (JAX) weights, zero bias; then ``init_cfg``."""
        for fc in (self.head, self.head_dist):
            if fc is None:
                continue
            if self.init_std > 0:
                trunc_normal_(fc.weight, std=self.init_std)
            else:
                nn.init.zeros_(fc.weight)
            nn.init.zeros_(fc.bias)
        if self.init_cfg is not None:
            super().init_weights()

    def pre_logits(self, feats: Tuple) -> torch.Tensor:
        """The last backbone output; distilled: the mean of the two tokens (timm)."""
        feat = feats[-1]
        if self.distilled:
            cls, dist = self._split(feat)
            return (cls + dist) / 2
        return feat

    def _split(self, feat):
        if not (isinstance(feat, (tuple, list)) and len(feat) == 2):
            raise ValueError('OVKitViTClsHead(distilled=True) needs the backbone built with '
                             "distilled=True, out_type='pre_logits' (a (cls, dist) pair)")
        return feat

    def forward(self, feats: Tuple) -> torch.Tensor:
        feat = feats[-1]
        if self.distilled:
            cls, dist = self._split(feat)
            return (self.head(self.head_drop(cls)) + self.head_dist(self.head_drop(dist))) / 2
        if isinstance(feat, (tuple, list)):
            raise ValueError('OVKitViTClsHead got a (cls, dist) pair: set distilled=True to '
                             'match the distilled backbone')
        return self.head(self.head_drop(feat))


__all__ = ['OVKitViTClsHead']
