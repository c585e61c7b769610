"""Run-engine pieces shared by every family: exact resume, atomic checkpoints, worker life cycle.

``import ovkit.engine`` registers :class:`ExactResumeHook` and :class:`AtomicCheckpointHook` in
mmengine's root ``HOOKS`` registry (visible from the mmdet / mmaction / mmpretrain scopes).
:mod:`ovkit.engine.process` needs neither torch nor mmengine at import time.
"""
from .checkpoint import (
                         AtomicCheckpointHook,
                         CheckpointError,
                         check_resume_checkpoint,
                         checkpoint_problem,
                         latest_good_checkpoint,
)
from .resume import RESUME_KEY, ExactResumeHook

__all__ = ['AtomicCheckpointHook', 'CheckpointError', 'ExactResumeHook', 'RESUME_KEY',
           'check_resume_checkpoint', 'checkpoint_problem', 'latest_good_checkpoint']
