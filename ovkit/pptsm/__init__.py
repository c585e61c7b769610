"""PP-TSM video recognition (PaddleVideo) for mmaction2.

``import ovkit.pptsm`` registers, in mmaction2's registries: the ``ResNetTweaksTSM`` backbone,
the ``PaddleWarmupCosineLR`` scheduler, the ``PaddlePreciseBNHook`` hook, the
``PaddleVideoDataset`` list dataset, strict PyAV reading and the Paddle-exact data transforms
(unreadable videos are skipped and counted by ovkit.engine, as every family's samples). Head,
loss, mixup and optimiser come from mmaction2 (see docs/pptsm.md).
"""
import ovkit  # noqa: F401  (applies ovkit.compat before mmaction2 is imported)
import ovkit.engine  # noqa: F401  (the runtime bases' ExactResumeHook, AtomicCheckpointHook)

from .backbone import ResNetTweaksTSM
from .dataset import PaddleVideoDataset
from .inputs import pretrained_fix  # noqa: F401  (declares the preflight inputs)
from .precise_bn import PaddlePreciseBNHook, update_bn_stats
from .scheduler import PaddleWarmupCosineLR, paddle_warmup_cosine_lr
from .shift import temporal_shift, temporal_shift_reference
from .transforms import (
    PaddleCenterCrop,
    PaddleMultiScaleCrop,
    PaddleRandomCrop,
    PaddleSampleFrames,
    PaddleScale,
    PaddleThreeCrop,
)
from .video_io import PyAVDecodeSampled, PyAVOpen

__all__ = [
    'ResNetTweaksTSM', 'PaddlePreciseBNHook', 'update_bn_stats', 'PaddleWarmupCosineLR',
    'paddle_warmup_cosine_lr', 'temporal_shift', 'temporal_shift_reference', 'PaddleSampleFrames',
    'PaddleScale', 'PaddleMultiScaleCrop', 'PaddleRandomCrop', 'PaddleCenterCrop',
    'PaddleThreeCrop', 'PaddleVideoDataset', 'PyAVOpen', 'PyAVDecodeSampled'
]
