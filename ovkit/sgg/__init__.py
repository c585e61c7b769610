"""Scene graph generation (mmdet registries): ``import ovkit.sgg`` registers the family.

Design facts: ``docs/sgg.md``; SGB = KaihuaTang/Scene-Graph-Benchmark.pytorch.
"""
# --- model side (sgg-model): detector, relation head, pair sampler, predictors ---
from .detector import SceneGraphDetector
from .predictors import (BaseRelationPredictor, FrequencyBias, FrequencyPredictor,
                         IMPPredictor, MotifsPredictor)
from .relation_head import RelationHead, SGGStatisticsHook
from .relation_head_features import (AllLevelsRoIExtractor, RelationBoxFeatureExtractor,
                                     RelationUnionFeatureExtractor)
from .sampling import RelationPairSampler

# --- end model side ---
__all__ = [
    'SceneGraphDetector', 'RelationHead', 'SGGStatisticsHook', 'RelationPairSampler',
    'AllLevelsRoIExtractor', 'RelationBoxFeatureExtractor', 'RelationUnionFeatureExtractor',
    'BaseRelationPredictor', 'FrequencyBias', 'FrequencyPredictor', 'IMPPredictor',
    'MotifsPredictor',
]
