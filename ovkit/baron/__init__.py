"""BARON open-vocabulary detection (CVPR 2023) as mmdet modules.

``import ovkit.baron`` (or ``custom_imports=dict(imports=['ovkit.baron'])``) registers:
``Baron`` (detector), ``BaronRoIHead``, ``BaronBBoxHead`` and its ConvFC variants, ``BaronKD``,
``EnsembleBaronConvFCBBoxHead`` and its variants (separate KD branch, test-time ensemble),
``BaronRPNHead``, ``DetachRPNHead`` and ``OVCocoAP50Metric`` in mmdet's registries.
"""
import ovkit  # noqa: F401  (compat fixes first)
import ovkit.engine  # noqa: F401  (the runtime bases' ExactResumeHook, AtomicCheckpointHook)

from . import inputs  # noqa: F401  (files the preflight checks; registers ovkit.engine)
from .bag_sampler import BagSampler
from .bbox_head import (
                        BaronBBoxHead,
                        BaronConvFCBBoxHead,
                        BaronShared2FCBBoxHead,
                        BaronShared4Conv1FCBBoxHead,
                        EnsembleBaronConvFCBBoxHead,
                        EnsembleBaronShared2FCBBoxHead,
                        EnsembleBaronShared4Conv1FCBBoxHead,
)
from .boxes_cache import BoxesCache
from .detector import Baron
from .kd import BaronKD, BoxPositionEmbedding, symmetric_info_nce
from .metric import OVCocoAP50Metric
from .queues import FeatureQueue
from .roi_head import BaronRoIHead
from .rpn_head import BaronRPNHead, DetachRPNHead

__all__ = ['Baron', 'BaronRoIHead', 'BaronBBoxHead', 'BaronConvFCBBoxHead',
           'BaronShared2FCBBoxHead', 'BaronShared4Conv1FCBBoxHead', 'BaronKD', 'BagSampler',
           'BoxPositionEmbedding', 'symmetric_info_nce', 'FeatureQueue', 'OVCocoAP50Metric',
           'BoxesCache', 'BaronRPNHead', 'DetachRPNHead', 'EnsembleBaronConvFCBBoxHead',
           'EnsembleBaronShared2FCBBoxHead', 'EnsembleBaronShared4Conv1FCBBoxHead']
