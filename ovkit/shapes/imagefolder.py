"""ImageFolder classification tree ``imagefolder/{train,val}/<class>/*.png`` of shapes.

Only the outline tells the classes apart: every image draws its shape in a colour drawn from
the whole palette independently of the class, at a random size and position on a random
background, so a classifier that sees colours only is at chance (``tests/shapes``) and the ViT
demo has to learn shapes.
"""
import os
import os.path as osp

import numpy as np
from PIL import ImageDraw

from .classes import SHAPE_CLASSES
from .draw import PALETTE, background, draw_shape


def make_imagefolder_shapes(root, per_class_train=40, per_class_val=8, size=64, seed=0):
    """Write an ImageFolder tree ``root/{train,val}/<class>/*.png``, one centred shape each.

    Args:
        root: output folder.
        per_class_train: training images per class.
        per_class_val: validation images per class.
        size: image side in pixels.
        seed: random seed; the same seed writes the same files.
    """
    rng = np.random.default_rng(seed + 1)
    for split, n in (('train', per_class_train), ('val', per_class_val)):
        for cls in SHAPE_CLASSES:
            d = osp.join(root, split, cls)
            os.makedirs(d, exist_ok=True)
            for k in range(n):
                img = background(rng, size)
                r = float(rng.uniform(size * 0.25, size * 0.4))
                c = size / 2 + rng.uniform(-size * 0.08, size * 0.08, 2)
                # the colour is independent of the class: shape alone decides it
                base = PALETTE[int(rng.integers(len(PALETTE)))]
                color = tuple(int(v) for v in np.clip(base + rng.integers(-25, 25, 3), 0, 255))
                draw_shape(ImageDraw.Draw(img), cls, float(c[0]), float(c[1]), r, color)
                img.save(osp.join(d, f'{k:04d}.png'))
    return root


def write(out_dir, seed=0, per_class_train=40, per_class_val=8, size=64):
    """Writer entry of :data:`ovkit.shapes.WRITERS`: the tree under ``out_dir/imagefolder``.

    Args:
        out_dir: the shapes root (e.g. ``data/shapes``).
        seed: random seed; the same seed writes the same files.
        per_class_train: training images per class.
        per_class_val: validation images per class.
        size: image side in pixels.
    """
    root = make_imagefolder_shapes(osp.join(out_dir, 'imagefolder'), per_class_train,
                                   per_class_val, size, seed)
    return dict(imagefolder=root)
