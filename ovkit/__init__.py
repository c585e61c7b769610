"""ovkit: OpenMMLab plugin modules.

``import ovkit`` is light: it installs the lazy upstream fixes of :mod:`ovkit.compat` and
registers nothing (it imports neither torch nor any OpenMMLab package). ``import ovkit.baron``
(etc.) registers a family; :func:`register_all_modules` imports every family.
"""
import importlib

from . import compat
from .version import __version__

compat.apply()

FAMILIES = ('ovkit.baron', 'ovkit.sgg', 'ovkit.pptsm', 'ovkit.vit', 'ovkit.accuracy')


def register_all_modules():
    """Import every family (and the CPU AMP wrapper) so their modules are registered."""
    importlib.import_module('ovkit.compat.amp')
    importlib.import_module('ovkit.engine')
    return [importlib.import_module(name) for name in FAMILIES]


def env_summary():
    """One line naming the versions that matter for bug reports."""
    import importlib.metadata as md

    import torch
    names = ('mmengine', 'mmcv', 'mmdet', 'mmaction2', 'mmpretrain', 'open_clip_torch', 'numpy')
    parts = [f'ovkit {__version__}',
             f'torch {torch.__version__} (cuda={torch.cuda.is_available()})']
    for name in names:
        try:
            parts.append(f'{name} {md.version(name)}')
        except md.PackageNotFoundError:
            parts.append(f'{name} missing')
    return ', '.join(parts)


__all__ = ['__version__', 'compat', 'register_all_modules', 'env_summary']
