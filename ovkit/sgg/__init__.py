"""Scene graph generation (Scene-Graph-Benchmark protocols) on mmdet.

``import ovkit.sgg`` registers the family's modules in mmdet's registries; the family contract
is docs/architecture.md.
"""
# --- data and evaluation (sgg-data) ---
from .dataset import VGSGGDataset  # noqa: F401
from .metric import SGGMetric  # noqa: F401
from .transforms import LoadSGGAnnotations, PackSGGInputs  # noqa: F401
# --- end data and evaluation ---
# --- model (sgg-model): detector, relation head, pair sampler, predictors ---
from .detector import SceneGraphDetector  # noqa: F401
from .predictors import (BaseRelationPredictor, FrequencyBias,  # noqa: F401
                         FrequencyPredictor, IMPPredictor, MotifsPredictor)
from .relation_head import RelationHead, SGGStatisticsHook  # noqa: F401
from .relation_head_features import (AllLevelsRoIExtractor,  # noqa: F401
                                     RelationBoxFeatureExtractor,
                                     RelationUnionFeatureExtractor)
from .sampling import RelationPairSampler  # noqa: F401
# --- end model ---
