"""ovkit: OpenMMLab plugin modules.

``import ovkit`` is light: it applies the upstream fixes in :mod:`ovkit.compat` and registers
nothing. ``import ovkit.baron`` (etc.) registers a family; :func:`register_all_modules`
imports every family.
"""
import importlib

from . import compat
from .version import __version__

compat.apply()
from . import amp  # noqa: E402,F401  (registers OVKitCPUAmpOptimWrapper)

FAMILIES = ('ovkit.baron', 'ovkit.sgg', 'ovkit.pptsm', 'ovkit.vit', 'ovkit.accuracy')


def register_all_modules():
    """Import every family so that its modules are registered in the host registries."""
    return [importlib.import_module(name) for name in FAMILIES]


def env_summary():
    """One line naming the versions that matter for bug reports."""
    import importlib.metadata as md
    import torch
    names = ('mmengine', 'mmcv', 'mmdet', 'mmaction2', 'mmpretrain', 'open_clip_torch', 'numpy')
    parts = [f'ovkit {__version__}', f'torch {torch.__version__} (cuda={torch.cuda.is_available()})']
    for name in names:
        try:
            parts.append(f'{name} {md.version(name)}')
        except md.PackageNotFoundError:
            parts.append(f'{name} missing')
    return ', '.join(parts)


__all__ = ['__version__', 'compat', 'register_all_modules', 'env_summary']
