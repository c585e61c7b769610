"""Scene graph generation (Scene-Graph-Benchmark protocols) on mmdet.

``import ovkit.sgg`` registers the family's modules in mmdet's registries; the family contract
is docs/architecture.md.
"""
import ovkit.engine  # noqa: F401  (the runtime bases' ExactResumeHook, AtomicCheckpointHook)

# --- data and evaluation (sgg-data) ---
from .dataset import VGSGGDataset  # noqa: F401
from .metric import SGGMetric  # noqa: F401
from .sgb_geometry import SGBAnchorGenerator, SGBDeltaXYWHBBoxCoder, SGBRoIExtractor  # noqa: F401
from .transforms import LoadSGGAnnotations, PackSGGInputs, SGBResize  # noqa: F401

# --- end data and evaluation ---
# isort: split
# --- model (sgg-model): detector, relation head, pair sampler, predictors ---
from .detector import SceneGraphDetector  # noqa: F401
from .predictors import (  # noqa: F401
    BaseRelationPredictor,
    FrequencyBias,
    FrequencyPredictor,
    IMPPredictor,
    MotifsPredictor,
)
from .relation_head import RelationHead, SGGStatisticsHook  # noqa: F401
from .relation_head_features import (  # noqa: F401
    AllLevelsRoIExtractor,
    RelationBoxFeatureExtractor,
    RelationUnionFeatureExtractor,
)
from .sampling import RelationPairSampler  # noqa: F401

# --- end model ---
# isort: split
# --- inputs the preflight checks (issue 8) ---
from . import inputs  # noqa: F401

# --- end inputs ---
# isort: split
# --- issue 9 (sgg2): predicate re-balancing, VCTree / Transformer / Causal predictors ---
from .predictors import (  # noqa: F401
    CausalAnalysisPredictor,
    TransformerPredictor,
    VCTreePredictor,
)
from .predictors.causal import CausalEffectHook  # noqa: F401
from .rebalance import PredicateRebalanceDataset  # noqa: F401
# --- end issue 9 ---
