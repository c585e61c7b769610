"""ViT/DeiT with timm's parameter names for mmpretrain (and mmaction2 frame backbones).

Importing this package registers ``OVKitViT``, ``OVKitViTClsHead`` (models) and ``OVKitValLoss``
(metric) in mmpretrain.
"""
import ovkit.engine  # noqa: F401  (the runtime bases' ExactResumeHook, AtomicCheckpointHook)

from . import inputs  # noqa: F401  (the files ViT configs read, declared for the preflight)
from .backbone import ARCHS, OUT_TYPES, OVKitViT, vit_flops
from .build import build_model, model_config
from .head import OVKitViTClsHead
from .metric import OVKitValLoss
from .pos_embed import resample_abs_pos_embed
from .weights import (
                      WHERE_PUBLISHED,
                      WeightsError,
                      load_backbone_weights,
                      load_timm_state_dict,
                      timm_to_ovkit,
)

__all__ = [
    'ARCHS', 'OUT_TYPES', 'OVKitValLoss', 'OVKitViT', 'OVKitViTClsHead', 'WHERE_PUBLISHED',
    'WeightsError', 'build_model', 'load_backbone_weights', 'load_timm_state_dict',
    'model_config', 'resample_abs_pos_embed', 'timm_to_ovkit', 'vit_flops'
]
