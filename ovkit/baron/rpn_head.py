"""RPN head whose objectness branch reads detached features (BARON's OV-COCO RPN)."""
import torch.nn.functional as F
from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS
from torch import nn


@MODELS.register_module()
class DetachRPNHead(RPNHead):
    """mmdet's ``RPNHead`` with the objectness branch on ``x.detach()``.

    An RPN trained on base-class boxes only learns that novel objects are background; when that
    objectness loss reaches the backbone it teaches the shared features to suppress novel
    objects too. Here the objectness branch (conv3x3 + ReLU + conv1x1, its own layers) reads the
    shared conv's output detached, so only box regression trains the shared conv and the
    backbone; the objectness branch is still trained, on frozen-for-it features. Same args as
    ``RPNHead`` (BARON uses ``num_convs=1``, the default: one shared conv). mmdet has no such
    head; the structure is read from the BARON reference.
    """

    def _init_layers(self) -> None:
        super()._init_layers()
        self.rpn_cls = nn.Sequential(
            nn.Conv2d(self.feat_channels, self.feat_channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(self.feat_channels, self.num_base_priors * self.cls_out_channels, 1))

    def forward_single(self, x):
        """(objectness [B, A * cls_out, H, W], deltas [B, A * 4, H, W]) of one level."""
        x = F.relu(self.rpn_conv(x))
        return self.rpn_cls(x.detach()), self.rpn_reg(x)
