"""Shapes scene graphs in the real VG150 layout (SGB's h5 / json / image folder).

``vg150/VG-SGG-with-attri.h5``, ``VG-SGG-dicts-with-attri.json``, ``image_data.json``,
``VG_100K/<image_id>.jpg`` and ``zeroshot_triplet.npy``: the files ``VGSGGDataset`` and
``SGGMetric`` read for the real Visual Genome, so the tiny configs run the full code path.

Objects are the shapes classes; predicates are spatial relations decided by the two boxes
alone (a model that sees the boxes can learn them, a class-pair frequency prior cannot):

1. ``inside`` / ``contains``: one box within the other (nested shapes, rare);
2. ``overlapping``: the boxes intersect;
3. ``near``: the gap between the boxes is below ``NEAR`` x the image's long side;
4. otherwise by the dominant axis of the centre offset: ``left of`` / ``right of`` /
   ``above`` / ``below`` (image y grows downwards).

Landscape images and annotation rates per predicate give a long-tailed predicate distribution
(left/right of most, inside/contains least), as VG's. Some ``near`` pairs also carry their
direction as a second relation on the same pair (VG has such duplicates; SGB's train-time rule
keeps one). A fixed random set of (subject class, object class, predicate) triplets is never
annotated in train; those seen in test are written to ``zeroshot_triplet.npy`` (rows: subject
class, object class, predicate; classes 1-based), the shapes counterpart of SGB's
``zeroshot_triplet.pytorch``.
"""
import json
import math
import os
import os.path as osp

import numpy as np
from PIL import ImageDraw

from .classes import SHAPE_CLASSES, SHAPE_PREDICATES
from .draw import PALETTE, background, draw_shape

PREDICATES = SHAPE_PREDICATES
NEAR = 0.06                # gap / long side under which two boxes are "near"
# probability that a pair with this predicate is annotated (VG annotates few pairs)
ANNOTATE = {'left of': 0.8, 'right of': 0.8, 'above': 0.5, 'below': 0.5, 'near': 0.6,
            'overlapping': 0.8, 'inside': 1.0, 'contains': 1.0}
# ``predicate_mix='longtail'``: annotators who mostly name the common relations, as VG's do
# (about 40/32/13/6/3/2/1.5/1 %: head/tail ~40x instead of ~7x). The pairs left unannotated
# are background pairs to a model, which is the reporting bias Causal TDE exists to undo.
ANNOTATE_LONGTAIL = {'left of': 1.0, 'right of': 0.8, 'above': 0.2, 'below': 0.2, 'near': 0.6,
                     'overlapping': 0.5, 'inside': 0.3, 'contains': 0.2}
PREDICATE_MIXES = {'default': ANNOTATE, 'longtail': ANNOTATE_LONGTAIL}
FIRST_IMAGE_ID = 100001    # far from SGB's four corrupted VG ids (1592, 1722, 4616, 4617)
BOX_SCALE = 1024


def spatial_predicate(a, b, width, height):
    """The predicate (1-based index into PREDICATES) of subject box ``a`` to object box ``b``.

    Args:
        a: subject box [x1, y1, x2, y2] in pixels.
        b: object box [x1, y1, x2, y2] in pixels.
        width: image width.
        height: image height.
    """
    if a[0] >= b[0] and a[1] >= b[1] and a[2] <= b[2] and a[3] <= b[3]:
        return PREDICATES.index('inside') + 1
    if b[0] >= a[0] and b[1] >= a[1] and b[2] <= a[2] and b[3] <= a[3]:
        return PREDICATES.index('contains') + 1
    gap_x = max(b[0] - a[2], a[0] - b[2])
    gap_y = max(b[1] - a[3], a[1] - b[3])
    if gap_x < 0 and gap_y < 0:
        return PREDICATES.index('overlapping') + 1
    if max(gap_x, gap_y) < NEAR * max(width, height):
        return PREDICATES.index('near') + 1
    dx = (b[0] + b[2] - a[0] - a[2]) / 2
    dy = (b[1] + b[3] - a[1] - a[3]) / 2
    if abs(dx) >= abs(dy):
        return PREDICATES.index('left of' if dx > 0 else 'right of') + 1
    return PREDICATES.index('above' if dy > 0 else 'below') + 1


def _direction(a, b):
    dx = (b[0] + b[2] - a[0] - a[2]) / 2
    dy = (b[1] + b[3] - a[1] - a[3]) / 2
    if abs(dx) >= abs(dy):
        return PREDICATES.index('left of' if dx > 0 else 'right of') + 1
    return PREDICATES.index('above' if dy > 0 else 'below') + 1


def make_scene(rng, max_objects=6):
    """One landscape image with 2..max_objects shapes, some overlapping or nested.

    Returns:
        (PIL image, boxes [N, 4] float pixels, labels [N] 1-based).
    """
    width = int(rng.integers(112, 161))
    height = int(rng.integers(72, 105))
    img = background(rng, max(width, height)).crop((0, 0, width, height))
    draw = ImageDraw.Draw(img)
    placed, boxes, labels = [], [], []
    n = int(rng.integers(2, max_objects + 1))
    for k in range(n):
        cls_idx = int(rng.integers(len(SHAPE_CLASSES)))
        nest = k > 0 and rng.random() < 0.12
        for _try in range(30):
            if nest:                       # a small shape inside an earlier big one
                px, py, pr = placed[int(rng.integers(len(placed)))]
                r = pr * float(rng.uniform(0.25, 0.4))
                cx, cy = px + rng.uniform(-0.3, 0.3) * pr, py + rng.uniform(-0.3, 0.3) * pr
                break
            r = float(rng.uniform(7, 18))
            cx = float(rng.uniform(r + 1, width - r - 1))
            cy = float(rng.uniform(r + 1, height - r - 1))
            # mostly apart; sometimes allowed to overlap
            if rng.random() < 0.15 or all(math.hypot(cx - x, cy - y) > r + q + 1
                                          for x, y, q in placed):
                break
        else:
            continue
        color = tuple(int(c) for c in np.clip(
            np.array(PALETTE[cls_idx % len(PALETTE)]) + rng.integers(-25, 25, 3), 0, 255))
        box = draw_shape(draw, SHAPE_CLASSES[cls_idx], cx, cy, r, color)
        placed.append((cx, cy, r))
        boxes.append([max(0.0, box[0]), max(0.0, box[1]), min(width - 1.0, box[2]),
                      min(height - 1.0, box[3])])
        labels.append(cls_idx + 1)
    return img, np.array(boxes, dtype=np.float64), np.array(labels, dtype=np.int64)


def make_relations(rng, boxes, labels, width, height, held_out=frozenset(), annotate=None):
    """Annotated relations [R, 3] (subject, object, predicate 1-based) of one image.

    Args:
        rng: numpy Generator.
        boxes: [N, 4] pixel boxes.
        labels: [N] 1-based classes.
        width: image width.
        height: image height.
        held_out: (subject class, object class, predicate) triplets never annotated here.
        annotate: predicate name -> probability that a pair with it is annotated
            (default :data:`ANNOTATE`).
    """
    annotate = ANNOTATE if annotate is None else annotate
    rels = []
    n = len(boxes)
    for i in range(n):
        for j in range(i + 1, n):
            s, o = (i, j) if rng.random() < 0.5 else (j, i)
            p = spatial_predicate(boxes[s], boxes[o], width, height)
            if rng.random() >= annotate[PREDICATES[p - 1]]:
                continue
            for pred in (p, _direction(boxes[s], boxes[o])) if (
                    PREDICATES[p - 1] == 'near' and rng.random() < 0.25) else (p, ):
                if (int(labels[s]), int(labels[o]), pred) not in held_out:
                    rels.append((s, o, pred))
    return np.array(rels, dtype=np.int64).reshape(-1, 3)


def make_vg150_shapes(root, num_train=160, num_test=48, max_objects=6, seed=0,
                      zeroshot_fraction=0.08, predicate_mix='default'):
    """Write the VG150-format shapes set under ``root``; returns the written paths.

    Args:
        root: output folder (``data/shapes/vg150``).
        num_train: images of h5 split 0 (train + val: ``VGSGGDataset`` cuts val from its start
            with ``num_val_im``).
        num_test: images of h5 split 2 (test).
        max_objects: most shapes per image.
        seed: random seed; the same seed writes the same files.
        zeroshot_fraction: fraction of all (subject, object, predicate) triplets held out of
            the train annotations.
        predicate_mix: 'default' (head/tail ~7x) or 'longtail' (~40x; train and test): how
            likely each predicate's pairs are annotated (:data:`PREDICATE_MIXES`).
    """
    import h5py
    if predicate_mix not in PREDICATE_MIXES:
        raise ValueError(f'vg150 shapes: predicate_mix={predicate_mix!r} is not one of '
                         f'{sorted(PREDICATE_MIXES)}')
    annotate = PREDICATE_MIXES[predicate_mix]
    rng = np.random.default_rng(seed + 7)
    img_dir = osp.join(root, 'VG_100K')
    os.makedirs(img_dir, exist_ok=True)
    num_cls, num_pred = len(SHAPE_CLASSES), len(PREDICATES)
    all_triplets = [(s, o, p) for s in range(1, num_cls + 1) for o in range(1, num_cls + 1)
                    for p in range(1, num_pred + 1)]
    pick = rng.choice(len(all_triplets), int(round(zeroshot_fraction * len(all_triplets))),
                      replace=False)
    held_out = frozenset(all_triplets[i] for i in pick)

    boxes_all, labels_all, rels_all, preds_all = [], [], [], []
    first_box, last_box, first_rel, last_rel, split, image_data = [], [], [], [], [], []
    test_triplets = set()
    n_box = n_rel = 0
    for k in range(num_train + num_test):
        is_test = k >= num_train
        img, boxes, labels = make_scene(rng, max_objects)
        width, height = img.size
        rels = make_relations(rng, boxes, labels, width, height,
                              frozenset() if is_test else held_out, annotate)
        image_id = FIRST_IMAGE_ID + k
        img.save(osp.join(img_dir, f'{image_id}.jpg'), quality=95)
        image_data.append(dict(image_id=image_id, width=width, height=height, url=None,
                               coco_id=None, flickr_id=None))
        # boxes as the real file stores them: cx, cy, w, h with the long side at 1024, int32
        scale = BOX_SCALE / max(width, height)
        wh = (boxes[:, 2:] - boxes[:, :2]) * scale
        cxcy = (boxes[:, :2] + boxes[:, 2:]) / 2 * scale
        boxes_all.append(np.round(np.concatenate([cxcy, np.maximum(wh, 1)], 1)))
        labels_all.append(labels)
        split.append(2 if is_test else 0)
        first_box.append(n_box)
        last_box.append(n_box + len(boxes) - 1)
        if len(rels):
            first_rel.append(n_rel)
            last_rel.append(n_rel + len(rels) - 1)
            rels_all.append(rels[:, :2] + n_box)
            preds_all.append(rels[:, 2:])
        else:
            first_rel.append(-1)
            last_rel.append(-1)
        if is_test:
            test_triplets.update((int(labels[s]), int(labels[o]), int(p)) for s, o, p in rels)
        n_box += len(boxes)
        n_rel += len(rels)

    boxes_1024 = np.concatenate(boxes_all).astype(np.int32)
    h5_path = osp.join(root, 'VG-SGG-with-attri.h5')
    with h5py.File(h5_path, 'w') as h5:
        h5['split'] = np.array(split, dtype=np.int64)
        h5['img_to_first_box'] = np.array(first_box, dtype=np.int64)
        h5['img_to_last_box'] = np.array(last_box, dtype=np.int64)
        h5['img_to_first_rel'] = np.array(first_rel, dtype=np.int64)
        h5['img_to_last_rel'] = np.array(last_rel, dtype=np.int64)
        h5['boxes_1024'] = boxes_1024
        h5['boxes_512'] = (boxes_1024 // 2).astype(np.int32)
        h5['labels'] = np.concatenate(labels_all).reshape(-1, 1)
        h5['attributes'] = np.zeros((n_box, 10), dtype=np.int64)
        h5['active_object_mask'] = np.ones((n_box, 1), dtype=bool)
        h5['relationships'] = (np.concatenate(rels_all) if rels_all
                               else np.zeros((0, 2), np.int64))
        h5['predicates'] = (np.concatenate(preds_all) if preds_all
                            else np.zeros((0, 1), np.int64))
    all_labels = np.concatenate(labels_all)
    all_preds = np.concatenate(preds_all)[:, 0] if preds_all else np.zeros(0, np.int64)
    dicts = dict(
        label_to_idx={c: i + 1 for i, c in enumerate(SHAPE_CLASSES)},
        idx_to_label={str(i + 1): c for i, c in enumerate(SHAPE_CLASSES)},
        predicate_to_idx={p: i + 1 for i, p in enumerate(PREDICATES)},
        idx_to_predicate={str(i + 1): p for i, p in enumerate(PREDICATES)},
        attribute_to_idx={}, idx_to_attribute={}, attribute_count={},
        object_count={c: int((all_labels == i + 1).sum()) for i, c in enumerate(SHAPE_CLASSES)},
        predicate_count={p: int((all_preds == i + 1).sum()) for i, p in enumerate(PREDICATES)})
    dict_path = osp.join(root, 'VG-SGG-dicts-with-attri.json')
    with open(dict_path, 'w') as f:
        json.dump(dicts, f)
    image_path = osp.join(root, 'image_data.json')
    with open(image_path, 'w') as f:
        json.dump(image_data, f)
    zs = np.array(sorted(t for t in test_triplets if t in held_out),
                  dtype=np.int64).reshape(-1, 3)
    zs_path = osp.join(root, 'zeroshot_triplet.npy')
    np.save(zs_path, zs)
    return dict(h5=h5_path, dicts=dict_path, image_data=image_path, images=img_dir,
                zeroshot=zs_path)


def write(out_dir, seed=0, num_train=160, num_test=48, max_objects=6, predicate_mix='default'):
    """Writer entry of :data:`ovkit.shapes.WRITERS`: the set under ``out_dir/vg150``.

    Args:
        out_dir: the shapes root (e.g. ``data/shapes``).
        seed: random seed; the same seed writes the same files.
        num_train: images of the h5 train split (val is cut from its start by the dataset).
        num_test: images of the h5 test split.
        max_objects: most shapes per image.
        predicate_mix: 'default' or 'longtail' (:data:`PREDICATE_MIXES`).
    """
    return make_vg150_shapes(osp.join(out_dir, 'vg150'), num_train, num_test, max_objects,
                             seed, predicate_mix=predicate_mix)
