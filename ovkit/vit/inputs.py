"""The files ViT configs read, declared for the preflight (:mod:`ovkit.engine.preflight`).

- ``model.backbone.pretrained`` of an ``OVKitViT``: a local weights file (timm ``.pth`` /
  ``.safetensors``, JAX ``.npz``, mmpretrain or ovkit checkpoint); missing, empty, truncated or
  not one of those formats is one line naming the key, the file and where it is published.
  ``load_from`` is an ovkit checkpoint, checked by the preflight itself.
- The image folder: the preflight checks every dataset's ``data_root`` and ``data_prefix``
  (``train/``, ``val/``) itself; :func:`declare_image_folder` (called by
  :func:`ovkit.vit.presets.folder_classes` when the config is read) gives those paths the fix
  that works for a folder config. The class folders are checked when the config is read.

Importing this module (``ovkit.vit`` does) also registers ovkit.engine's hooks, which the
runtime bases enable.
"""
import json
import os.path as osp
import re
import struct
import zipfile

from ovkit.engine.checkpoint import checkpoint_problem
from ovkit.engine.preflight import declare_fix, declare_input

__all__ = ['weights_problem', 'declare_image_folder']

_TAG = re.compile(r'((?:vit|deit)\w*\.\w+?)(?:\.(?:safetensors|pth|bin)|/|$)')


def weights_problem(path, node=None, cfg=None):
    """What makes ``path`` unusable as ViT weights, or None; reads headers, not the weights.

    Args:
        path: an existing, non-empty local file.
        node: the config dict holding the key (only ``OVKitViT`` nodes are checked).
        cfg: the whole config (unused; the preflight's validate signature).
    """
    if node is not None and 'OVKitViT' not in str(node.get('type', '')):
        return None
    if path.endswith('.safetensors'):
        with open(path, 'rb') as f:
            head = f.read(8)
            size = struct.unpack('<Q', head)[0] if len(head) == 8 else -1
            if not 0 < size <= osp.getsize(path) - 8:
                return 'not a .safetensors file (its 8-byte header length does not fit the file)'
            try:
                header = json.loads(f.read(size))
                end = max((v['data_offsets'][1] for k, v in header.items()
                           if k != '__metadata__'), default=0)
            except (ValueError, TypeError, KeyError, IndexError):
                return 'not a .safetensors file (its JSON header does not parse)'
        if 8 + size + end > osp.getsize(path):
            return (f'truncated .safetensors file ({osp.getsize(path)} bytes, its header '
                    f'lists {8 + size + end})')
        return None
    if path.endswith('.npz'):
        if not zipfile.is_zipfile(path):
            return 'not a JAX .npz file (not a complete zip archive: truncated?)'
        return None
    problem = checkpoint_problem(path)
    if problem:
        return (f'{problem}; ViT weights are a timm .pth/.safetensors, a JAX .npz or an '
                'mmpretrain/ovkit checkpoint')
    return None


def _weights_fix(path, node, key):
    if 'OVKitViT' not in str(node.get('type', '')):
        return f'correct {key} or override it: --cfg-options {key}=...'
    from .weights import WHERE_PUBLISHED
    tag = _TAG.search(path)
    where = (f'download https://huggingface.co/timm/{tag.group(1)} (model.safetensors) to that '
             'path (ovkit never downloads)' if tag else WHERE_PUBLISHED)
    return f'{where}; or set {key}=None to train from scratch'


def declare_image_folder(data_root, config_hint='the config'):
    """Tell the preflight how to fix a missing image folder ``data_root`` (and what is in it).

    The generic fix (``--cfg-options ...data_root=...``) does not work for a folder config: the
    classes are read from the folder when the config is read, so the folder must be set in the
    config or through ``DATA_ROOT``.

    Args:
        data_root: the folder the config reads.
        config_hint: how the user sets it, for the message.
    """
    root = str(data_root).rstrip('/')
    if not root:
        return
    if re.search(r'(^|/)shapes(/|$)', root):
        shapes = root[:root.rindex('shapes') + len('shapes')]
        fix = (f'generate it with `python tools/data/make_shapes.py --out {shapes} '
               '--kinds imagefolder` (run from the folder the path is relative to)')
    else:
        fix = (f'put the images as {root}/train/<class name>/<image>.jpg and '
               f'{root}/val/<class name>/<image>.jpg, or point data_root at such a folder '
               f'({config_hint}); --cfg-options cannot change it, the classes are read from '
               'the folder when the config is read')
    declare_fix('^' + re.escape(root) + r'(/|$)', fix.replace('\\', r'\\'))


declare_input('backbone.pretrained', kind='file', fix=_weights_fix, validate=weights_problem)
