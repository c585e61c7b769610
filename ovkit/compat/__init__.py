"""Every upstream fix ovkit needs on today's stack, in one place.

``import ovkit`` calls :func:`apply` once. Each fix states why it exists and is covered by
``tests/compat/``. Fixes are narrow (they change behaviour only where the upstream code is
broken on this stack: torch 2.14, numpy 2, a CPU-only machine, the mmaction2 wheel) and lazy:
:func:`apply` only installs an import hook, and each fix runs when the module it mends is
first imported, so ``import ovkit`` imports neither torch nor any OpenMMLab package.

- :mod:`.checkpoint`: weights-only loading of mmengine checkpoints (when torch is imported);
- :mod:`.mmaction_drn`: the module missing from the mmaction2 1.2.0 wheel (a stand-in);
- :mod:`.lvis`: ``np.float`` for lvis 0.5.3's evaluator only;
- :mod:`.distributed`: gloo and CPU DDP when no GPU is present (when mmengine's launcher and
  DDP wrapper are imported);
- :mod:`.amp`: ``OVKitCPUAmpOptimWrapper`` for ``--amp`` on a CPU. This one *registers* a
  module, so it is not applied by ``import ovkit``: ``tools/train.py --amp`` imports it, and a
  config can list ``'ovkit.compat.amp'`` in ``custom_imports``.
"""
from . import checkpoint, distributed, lvis, mmaction_drn
from .hooks import HOOKS

_APPLIED = False


def apply():
    """Install the import hook and schedule every fix (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _APPLIED = True
    HOOKS.install()
    HOOKS.after_import('torch', checkpoint.allow_mmengine_checkpoints)
    mmaction_drn.provide_drn(HOOKS)
    HOOKS.after_import('lvis.eval', lvis.fix_lvis_eval)
    HOOKS.after_import('mmengine.dist.utils', distributed.patch_launcher)
    HOOKS.after_import('mmengine.model.wrappers.distributed', distributed.patch_ddp_wrapper)


__all__ = ['apply', 'HOOKS', 'checkpoint', 'distributed', 'lvis', 'mmaction_drn']
