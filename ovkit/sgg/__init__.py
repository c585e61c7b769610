"""Scene graph generation (Scene-Graph-Benchmark protocols) on mmdet.

``import ovkit.sgg`` registers the family's modules in mmdet's registries; the family contract
is docs/architecture.md.
"""
import ovkit.engine  # noqa: F401  (the runtime bases' ExactResumeHook, AtomicCheckpointHook)

# --- data and evaluation (sgg-data) ---
from .dataset import VGSGGDataset  # noqa: F401
from .metric import SGGMetric  # noqa: F401
from .transforms import LoadSGGAnnotations, PackSGGInputs  # noqa: F401
# --- end data and evaluation ---
