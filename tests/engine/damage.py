"""Generated damage for the bad-input corpus: every case is a few lines applied to a fresh copy
of the shapes data (``ovkit.shapes``), so no broken file is checked in."""
import json
import os
import os.path as osp
import shutil

import numpy as np

COCO = osp.join('data', 'shapes', 'coco')
TRAIN_JSON = osp.join(COCO, 'annotations', 'train.json')
VAL_JSON = osp.join(COCO, 'annotations', 'val.json')


def copy_workspace(clean, dst):
    """A copy of ``clean``'s data/ folder under ``dst`` (a new workspace to damage).

    Args:
        clean: a workspace holding data/shapes (the ``shapes_workspace`` fixture).
        dst: the new workspace folder.
    """
    shutil.copytree(osp.join(clean, 'data'), osp.join(dst, 'data'))
    return dst


def truncate(path, keep=None):
    """Cut ``path`` to ``keep`` bytes (default: half of it)."""
    size = osp.getsize(path)
    with open(path, 'r+b') as f:
        f.truncate(size // 2 if keep is None else keep)


def random_bytes(path, size=4096, seed=0):
    """Replace ``path`` with random bytes."""
    with open(path, 'wb') as f:
        f.write(np.random.default_rng(seed).bytes(size))


def edit_json(path, edit):
    """Load, change with ``edit(data)`` (in place or returned), write back."""
    with open(path) as f:
        data = json.load(f)
    result = edit(data)
    data = result if isinstance(result, dict) else data
    with open(path, 'w') as f:
        json.dump(data, f)
    return data


def image_path(ws, split, index):
    """The ``index``-th image file of ``split`` in the json's order."""
    ann = TRAIN_JSON if split == 'train' else VAL_JSON
    with open(osp.join(ws, ann)) as f:
        name = json.load(f)['images'][index]['file_name']
    return osp.join(ws, COCO, split, name)


def remove(path):
    os.remove(path)
