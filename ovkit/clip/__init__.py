"""Frozen CLIP from local weights: pseudo-word text encoder, layer-k outputs, dense image features.

Shared by every family that needs CLIP (BARON first). See :func:`build_clip`.
"""
from .builder import TINY_CLIP_CFG, build_clip, load_clip_state_dict
from .model import CLIPModel
from .prompts import build_class_embeddings, load_class_names, load_prompt_templates

__all__ = ['build_clip', 'CLIPModel', 'load_clip_state_dict', 'TINY_CLIP_CFG',
           'build_class_embeddings', 'load_class_names', 'load_prompt_templates']
