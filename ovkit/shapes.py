"""Synthetic "shapes" data in the real formats the full configs read.

Deterministic by seed and generated in seconds, so the demo, CI and the tests train real
OpenMMLab pipelines without downloading a dataset:

- a COCO-format detection set (``coco/annotations/{train,train_base,val}.json`` + images) whose
  categories are split into base and novel, as open-vocabulary detection needs: train_base.json
  keeps only base-class boxes (like OV-COCO's ``instances_train2017_seen_2.json``), val.json
  keeps all classes;
- an ImageFolder classification tree (``imagefolder/{train,val}/<class>/*.png``).
"""
import json
import math
import os
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw

# Order is the category order of every shapes config (category id = index + 1).
SHAPE_CLASSES = ('circle', 'square', 'triangle', 'diamond', 'cross', 'hexagon', 'star', 'ring')
# Open-vocabulary split: the last two are novel (never annotated in train_base.json).
NOVEL_CLASSES = ('star', 'ring')
BASE_CLASSES = tuple(c for c in SHAPE_CLASSES if c not in NOVEL_CLASSES)

_PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 165, 0), (145, 30, 180),
            (70, 240, 240), (240, 50, 230), (128, 128, 0)]


def _polygon(cls, cx, cy, r):
    """Vertices of a shape centred at (cx, cy) with circumradius r."""
    if cls == 'square':
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if cls == 'triangle':
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if cls == 'diamond':
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if cls == 'hexagon':
        return [(cx + r * math.cos(a), cy + r * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 7)[:-1]]
    if cls == 'star':
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if cls == 'cross':
        t = r / 3
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
                (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
                (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(cls)


def draw_shape(draw, cls, cx, cy, r, color):
    """Draw one shape; returns its tight box [x1, y1, x2, y2]."""
    if cls in ('circle', 'ring'):
        box = [cx - r, cy - r, cx + r, cy + r]
        if cls == 'circle':
            draw.ellipse(box, fill=color)
        else:
            draw.ellipse(box, outline=color, width=max(2, int(r / 3)))
        return box
    pts = _polygon(cls, cx, cy, r)
    draw.polygon(pts, fill=color)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [min(xs), min(ys), max(xs), max(ys)]


def _background(rng, size):
    """A smooth random gradient plus noise, so the detector cannot key on a flat colour."""
    h = w = size
    base = rng.integers(0, 90, size=3)
    gy, gx = np.mgrid[0:h, 0:w] / size
    direction = rng.uniform(-40, 40, size=(2, 3))
    img = base + gy[..., None] * direction[0] + gx[..., None] * direction[1]
    img = img + rng.normal(0, 6, size=(h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_detection_image(rng, size=128, max_objects=4, classes=SHAPE_CLASSES):
    """One image with 1..max_objects non-overlapping shapes; returns (PIL image, [(cls, box)])."""
    img = _background(rng, size)
    draw = ImageDraw.Draw(img)
    objects, placed = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _try in range(20):
            r = float(rng.uniform(size * 0.08, size * 0.2))
            cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, size=2))
            if all(math.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                break
        else:
            continue
        cls_idx = int(rng.integers(len(classes)))
        color = tuple(int(c) for c in _PALETTE[cls_idx % len(_PALETTE)] + rng.integers(-25, 25, 3))
        box = draw_shape(draw, classes[cls_idx], cx, cy, r, color)
        placed.append((cx, cy, r))
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


def make_imagefolder_shapes(root, per_class_train=8, per_class_val=4, size=64, seed=0):
    """Write an ImageFolder tree ``root/{train,val}/<class>/*.png``, one centred shape each."""
    rng = np.random.default_rng(seed + 1)
    for split, n in (('train', per_class_train), ('val', per_class_val)):
        for cls_idx, cls in enumerate(SHAPE_CLASSES):
            d = osp.join(root, split, cls)
            os.makedirs(d, exist_ok=True)
            for k in range(n):
                img = _background(rng, size)
                r = float(rng.uniform(size * 0.25, size * 0.4))
                c = size / 2 + rng.uniform(-size * 0.08, size * 0.08, 2)
                color = tuple(int(v) for v in _PALETTE[cls_idx] + rng.integers(-25, 25, 3))
                draw_shape(ImageDraw.Draw(img), cls, float(c[0]), float(c[1]), r, color)
                img.save(osp.join(d, f'{k:04d}.png'))
    return root


def make_shapes(out_dir, seed=0, num_train=64, num_val=16, size=128):
    """Everything the shapes configs read, under ``out_dir`` (``coco/`` and ``imagefolder/``)."""
    paths = make_coco_shapes(osp.join(out_dir, 'coco'), num_train, num_val, size, seed)
    make_imagefolder_shapes(osp.join(out_dir, 'imagefolder'), seed=seed)
    with open(osp.join(out_dir, 'classes.txt'), 'w') as f:
        f.write('\n'.join(SHAPE_CLASSES) + '\n')
    return paths
