"""Run-time pieces shared by every family (issue 8: reliability).

``import ovkit.engine`` registers the hooks ovkit's runtime bases enable, in mmengine's root
``HOOKS`` registry (visible from the mmdet / mmaction / mmpretrain scopes):

- :class:`~ovkit.engine.skips.SkipBadSamplesHook` (``default_hooks.bad_samples``): corrupt or
  missing samples skipped, counted and bounded (:mod:`ovkit.engine.skips`);
- :class:`~ovkit.engine.guards.NonFiniteLossHook` (``default_hooks.nonfinite_loss``): a NaN/inf
  loss stops training (:mod:`ovkit.engine.guards`).

Also here: :mod:`~ovkit.engine.preflight` (every input a config names, checked before a run
starts), :mod:`~ovkit.engine.sanity` (COCO annotation checks) and :mod:`~ovkit.engine.errors`
(one-line errors for users).
"""
from .guards import CheckpointFitHook, NonFiniteLossHook
from .skips import SkipBadSamplesHook

__all__ = ['CheckpointFitHook', 'NonFiniteLossHook', 'SkipBadSamplesHook']
