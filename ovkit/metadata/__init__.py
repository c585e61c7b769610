"""Small files ovkit ships as package data: class lists, splits, prompt templates.

One resolver for all of them, so a wheel install finds them too and no code computes the
repository root from ``__file__``::

    from ovkit.metadata import class_names, metadata_path
    classes = class_names('coco_ov_65.txt')        # tuple, file order = label order
    metadata_path('prompt_templates.txt')          # absolute path of the shipped file

Everywhere ovkit accepts a list file, an existing path wins; otherwise a bare file name is
looked up among the shipped files (:func:`shipped_names`).
"""
import os
import os.path as osp
from typing import List, Tuple

_DIR = osp.dirname(osp.abspath(__file__))

__all__ = ['metadata_path', 'resolve', 'read_lines', 'class_names', 'shipped_names']


def shipped_names() -> List[str]:
    """Names of the files shipped in ``ovkit/metadata``."""
    return sorted(n for n in os.listdir(_DIR) if not n.startswith(('_', '.')))


def metadata_path(name: str) -> str:
    """Absolute path of the shipped file ``name`` (e.g. ``'coco_ov_65.txt'``).

    Args:
        name: a file name listed by :func:`shipped_names`.
    """
    path = osp.join(_DIR, name)
    if osp.basename(name) != name or not osp.isfile(path):
        raise FileNotFoundError(
            f"ovkit ships no metadata file named '{name}'; shipped: {', '.join(shipped_names())}")
    return path


def resolve(name_or_path: str, what: str = 'list') -> str:
    """An existing path as it is; otherwise the shipped file of that bare name.

    Args:
        name_or_path: a path to a file, or the name of a shipped file.
        what: what the file holds, for the error message (e.g. 'class names').
    """
    if osp.isfile(name_or_path):
        return name_or_path
    if osp.basename(name_or_path) == name_or_path and osp.isfile(osp.join(_DIR, name_or_path)):
        return osp.join(_DIR, name_or_path)
    raise FileNotFoundError(
        f"{what} file '{name_or_path}' not found (absolute: {osp.abspath(name_or_path)}) and "
        f"it is not one of the files ovkit ships ({', '.join(shipped_names())}). Pass an "
        'existing path or a shipped name, or write your own file (one entry per line).')


def read_lines(name_or_path: str, what: str = 'list') -> List[str]:
    """Non-empty lines of a list file, ``#`` comments skipped, order preserved.

    Args:
        name_or_path: a path, or the name of a shipped file.
        what: what the file holds, for error messages.
    """
    with open(resolve(name_or_path, what), encoding='utf-8') as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line and not line.startswith('#')]


def class_names(name_or_path: str) -> Tuple[str, ...]:
    """Class names of a list file as a tuple (the config-friendly form); row = label.

    Args:
        name_or_path: a path, or the name of a shipped file such as ``'coco_ov_65.txt'``.
    """
    names = read_lines(name_or_path, 'class names')
    if not names:
        raise ValueError(f"class names file '{name_or_path}' has no class names.")
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"class names file '{name_or_path}' repeats {dups}; each class must "
                         'appear once (its row index is its label).')
    return tuple(names)
