"""Synthetic "shapes" data in the real formats the full configs read.

Deterministic by seed and generated in seconds, so the demo, CI and the tests train real
OpenMMLab pipelines without downloading a dataset. One writer module per format, each listed
in :data:`WRITERS` and writing under ``<out_dir>/<kind>/``:

- ``coco`` (:mod:`.coco`): COCO detection json + images, with a base/novel split;
- ``imagefolder`` (:mod:`.imagefolder`): ``{train,val}/<class>/*.png`` classification tree;
- ``vg150`` (:mod:`.vg150`): scene graphs (spatial predicates) in SGB's VG150 h5/json/image
  layout, with a zero-shot triplet file;
- ``video`` (:mod:`.video`): short AVI clips whose class is decided by motion alone, with
  mmaction2 list files (with and without the ``.avi`` suffix).

The class list and split, and the scene-graph predicates (:mod:`.classes`) are the single
source every shapes config reads.
"""
import os
import os.path as osp

from . import coco, imagefolder, vg150, video
from .classes import BASE_CLASSES, NOVEL_CLASS_IDS, NOVEL_CLASSES, SHAPE_CLASSES, SHAPE_PREDICATES
from .coco import make_coco_shapes, make_detection_image
from .draw import draw_shape
from .imagefolder import make_imagefolder_shapes
from .video import VIDEO_CLASSES, make_video_shapes

# kind -> writer(out_dir, seed=0, **options) -> dict of written paths. A family adds its
# format here (one module, one entry).
WRITERS = {
    'coco': coco.write,
    'imagefolder': imagefolder.write,
    'vg150': vg150.write,
    'video': video.write,
}

__all__ = ['WRITERS', 'make_shapes', 'SHAPE_CLASSES', 'SHAPE_PREDICATES', 'BASE_CLASSES',
           'NOVEL_CLASSES', 'NOVEL_CLASS_IDS', 'make_coco_shapes', 'make_imagefolder_shapes',
           'make_detection_image', 'draw_shape', 'VIDEO_CLASSES', 'make_video_shapes']


def make_shapes(out_dir, seed=0, kinds=None, options=None):
    """Write the shapes data sets under ``out_dir``.

    Args:
        out_dir: root folder (``data/shapes`` in the configs).
        seed: random seed shared by every writer.
        kinds: which :data:`WRITERS` to run (default: all of them).
        options: per-kind keyword arguments, e.g. ``{'coco': dict(num_train=128)}``.

    Returns:
        dict: kind -> what its writer returned (paths).
    """
    kinds = list(WRITERS) if kinds is None else list(kinds)
    unknown = [k for k in kinds if k not in WRITERS]
    if unknown:
        raise ValueError(f'unknown shapes kinds {unknown}; available: {", ".join(WRITERS)}')
    options = options or {}
    os.makedirs(out_dir, exist_ok=True)
    written = {kind: WRITERS[kind](out_dir, seed=seed, **options.get(kind, {}))
               for kind in kinds}
    # Class names for tools that take a list file (e.g. gen_class_embeddings.py).
    with open(osp.join(out_dir, 'classes.txt'), 'w') as f:
        f.write('\n'.join(SHAPE_CLASSES) + '\n')
    return written
