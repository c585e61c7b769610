"""RPN heads of BARON: mmdet's RPNHead safe under autocast, and one with detached objectness."""
import torch.nn.functional as F
from mmdet.models.dense_heads import RPNHead
from mmdet.registry import MODELS
from torch import nn


@MODELS.register_module()
class BaronRPNHead(RPNHead):
    """mmdet's ``RPNHead`` whose proposal NMS gets fp32 boxes and scores.

    Under autocast (``AmpOptimWrapper``, ``--amp``) the objectness scores are fp16/bf16 while
    the decoded boxes are fp32, and mmcv's NMS in mmdet 3.3's ``RPNHead._bbox_post_process``
    rejects the mix ("expected scalar type Float"); the BARON reference fixes it the same way
    in its ``CustomRPNHead``. Otherwise identical to ``RPNHead`` (the OV-LVIS config's RPN).
    """

    def _bbox_post_process(self, results, cfg, rescale=False, with_nms=True, img_meta=None):
        results.scores = results.scores.float()
        if hasattr(results.bboxes, 'float'):
            results.bboxes = results.bboxes.float()
        return super()._bbox_post_process(results, cfg, rescale=rescale, with_nms=with_nms,
                                          img_meta=img_meta)


@MODELS.register_module()
class DetachRPNHead(BaronRPNHead):
    """:class:`BaronRPNHead` with the objectness branch on ``x.detach()``.

    An RPN trained on base-class boxes only learns that novel objects are background; when that
    objectness loss reaches the backbone it teaches the shared features to suppress novel
    objects too. Here the objectness branch (conv3x3 + ReLU + conv1x1, its own layers) reads the
    shared conv's output detached, so only box regression trains the shared conv and the
    backbone; the objectness branch is still trained, on frozen-for-it features. Same args as
    ``RPNHead`` (BARON uses ``num_convs=1``, the default: one shared conv). mmdet has no such
    head; the structure is read from the BARON reference (OV-COCO).
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
