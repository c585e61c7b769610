"""COCO-format shapes detection set with an open-vocabulary (base/novel) split.

``coco/annotations/{train,train_base,val}.json`` + ``coco/{train,val}/*.png``: train_base.json
keeps only base-class boxes (like OV-COCO's ``instances_train2017_seen_2.json``), val.json keeps
all classes.
"""
import json
import os
import os.path as osp

import numpy as np
from PIL import ImageDraw

from .classes import NOVEL_CLASSES, SHAPE_CLASSES
from .draw import PALETTE, background, draw_shape, place_shapes


def make_detection_image(rng, size=128, max_objects=4, classes=SHAPE_CLASSES):
    """One image with 1..max_objects non-overlapping shapes; returns (PIL image, [(cls, box)])."""
    img = background(rng, size)
    draw = ImageDraw.Draw(img)
    objects = []
    for cx, cy, r in place_shapes(rng, size, int(rng.integers(1, max_objects + 1))):
        cls_idx = int(rng.integers(len(classes)))
        color = tuple(int(c) for c in PALETTE[cls_idx % len(PALETTE)] + rng.integers(-25, 25, 3))
        box = draw_shape(draw, classes[cls_idx], cx, cy, r, color)
        objects.append((cls_idx, [max(0.0, box[0]), max(0.0, box[1]),
                                  min(float(size), box[2]), min(float(size), box[3])]))
    return img, objects


def _coco_categories():
    return [dict(id=i + 1, name=name, supercategory='shape',
                 split='novel' if name in NOVEL_CLASSES else 'base')
            for i, name in enumerate(SHAPE_CLASSES)]


def _write_coco_split(root, split, num_images, rng, size, start_id):
    img_dir = osp.join(root, split)
    os.makedirs(img_dir, exist_ok=True)
    images, annotations = [], []
    ann_id = start_id * 100
    for k in range(num_images):
        img, objects = make_detection_image(rng, size)
        image_id = start_id + k
        file_name = f'{image_id:06d}.png'
        img.save(osp.join(img_dir, file_name))
        images.append(dict(id=image_id, file_name=file_name, width=size, height=size))
        for cls_idx, (x1, y1, x2, y2) in objects:
            ann_id += 1
            bbox = [round(v, 2) for v in (x1, y1, x2 - x1, y2 - y1)]
            annotations.append(dict(id=ann_id, image_id=image_id, category_id=cls_idx + 1,
                                    bbox=bbox, area=round(bbox[2] * bbox[3], 2), iscrowd=0))
    return images, annotations


def make_coco_shapes(root, num_train=64, num_val=16, size=128, seed=0):
    """Write the COCO-format shapes detection set under ``root``; returns the json paths."""
    rng = np.random.default_rng(seed)
    ann_dir = osp.join(root, 'annotations')
    os.makedirs(ann_dir, exist_ok=True)
    cats = _coco_categories()
    novel_ids = {c['id'] for c in cats if c['split'] == 'novel'}
    paths = {}
    for split, n, start in (('train', num_train, 1), ('val', num_val, 100000)):
        images, anns = _write_coco_split(root, split, n, rng, size, start)
        data = dict(images=images, annotations=anns, categories=cats)
        paths[split] = osp.join(ann_dir, f'{split}.json')
        with open(paths[split], 'w') as f:
            json.dump(data, f)
        if split == 'train':
            base = dict(data, annotations=[a for a in anns if a['category_id'] not in novel_ids])
            paths['train_base'] = osp.join(ann_dir, 'train_base.json')
            with open(paths['train_base'], 'w') as f:
                json.dump(base, f)
    return paths


def write(out_dir, seed=0, num_train=64, num_val=16, size=128):
    """Writer entry of :data:`ovkit.shapes.WRITERS`: the set under ``out_dir/coco``.

    Args:
        out_dir: the shapes root (e.g. ``data/shapes``).
        seed: random seed; the same seed writes the same files.
        num_train: number of training images.
        num_val: number of validation images.
        size: image side in pixels.
    """
    return make_coco_shapes(osp.join(out_dir, 'coco'), num_train, num_val, size, seed)
