"""Run-time pieces shared by every family (issue 8: reliability).

``import ovkit.engine`` registers the hooks ovkit's runtime bases enable, in mmengine's root
``HOOKS`` registry (visible from the mmdet / mmaction / mmpretrain scopes):

- :class:`ExactResumeHook` and :class:`AtomicCheckpointHook`: exact resume, checkpoints that
  survive a kill (:mod:`ovkit.engine.resume`, :mod:`ovkit.engine.checkpoint`);
- :class:`SkipBadSamplesHook` (``default_hooks.bad_samples``): corrupt or missing samples
  skipped, counted and bounded (:mod:`ovkit.engine.skips`);
- :class:`NonFiniteLossHook` (``default_hooks.nonfinite_loss``): a NaN/inf loss stops training
  (:mod:`ovkit.engine.guards`).

Also here: :mod:`~ovkit.engine.preflight` (every input a config names, checked before a run
starts), :mod:`~ovkit.engine.sanity` (COCO annotation checks), :mod:`~ovkit.engine.errors`
(one-line errors for users) and :mod:`~ovkit.engine.process` (worker life cycle; needs neither
torch nor mmengine at import time).
"""
from .checkpoint import (
                         AtomicCheckpointHook,
                         CheckpointError,
                         check_resume_checkpoint,
                         checkpoint_problem,
                         latest_good_checkpoint,
)
from .guards import CheckpointFitHook, NonFiniteLossHook
from .resume import RESUME_KEY, ExactResumeHook
from .skips import SkipBadSamplesHook

__all__ = ['AtomicCheckpointHook', 'CheckpointError', 'ExactResumeHook', 'RESUME_KEY',
           'check_resume_checkpoint', 'checkpoint_problem', 'latest_good_checkpoint',
           'CheckpointFitHook', 'NonFiniteLossHook', 'SkipBadSamplesHook']
