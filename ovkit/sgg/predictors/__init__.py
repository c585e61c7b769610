"""Relation predictors (mmdet MODELS): Motifs, IMP, the frequency-only baseline, VCTree,
Transformer and Causal TDE."""
from .base import BaseRelationPredictor, FrequencyBias
from .frequency import FrequencyPredictor
from .imp import IMPPredictor
from .motifs import MotifsPredictor

# isort: split
# issue 9 (sgg2)
from .causal import CausalAnalysisPredictor
from .transformer import TransformerPredictor
from .vctree import VCTreePredictor

__all__ = ['BaseRelationPredictor', 'FrequencyBias', 'FrequencyPredictor', 'IMPPredictor',
           'MotifsPredictor', 'CausalAnalysisPredictor', 'TransformerPredictor',
           'VCTreePredictor']
