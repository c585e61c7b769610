"""Relation predictors (mmdet MODELS): Motifs, IMP and the frequency-only baseline."""
from .base import BaseRelationPredictor, FrequencyBias
from .frequency import FrequencyPredictor
from .imp import IMPPredictor
from .motifs import MotifsPredictor

__all__ = ['BaseRelationPredictor', 'FrequencyBias', 'FrequencyPredictor', 'IMPPredictor',
           'MotifsPredictor']
