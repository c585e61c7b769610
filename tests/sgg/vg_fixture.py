"""Tiny VG150-format files (h5 + dicts json + image_data.json + images) for the sgg tests.

Each image is given directly in the h5's terms (boxes as cx,cy,w,h at BOX_SCALE, labels
1..C, relations with local indices), so that the tests can compute the expected
conversions by hand.
"""
import json
import os
import os.path as osp

import numpy as np


def write_vg(root, images, classes=('cat', 'dog', 'tree'), predicates=('on', 'near', 'has'),
             box_dtype=np.int32, image_data_extra=(), make_images=True, box_scale=1024):
    """Write ``VG-SGG-with-attri.h5``, ``VG-SGG-dicts-with-attri.json``, ``image_data.json``
    and ``VG_100K/<image_id>.jpg`` under ``root``.

    Args:
        root: output folder.
        images: list of dicts: image_id, width, height, split (0 train / 2 test),
            boxes ([N, 4] cx,cy,w,h at box_scale), labels ([N] 1..C), rels ([R, 3] local),
            optional file_size (w, h) of the JPEG when it is not the json's width/height.
        classes: object names (index 1..C).
        predicates: predicate names (index 1..P).
        box_dtype: dtype of ``boxes_{box_scale}`` (the real file: int32).
        image_data_extra: (position, entry) pairs inserted into image_data.json only (SGB's
            four corrupted images are listed there but not in the h5).
        make_images: write the JPEG files.
        box_scale: 1024 (also written: boxes_512 = boxes_1024 / 2).
    """
    import h5py
    from PIL import Image
    os.makedirs(osp.join(root, 'VG_100K'), exist_ok=True)
    boxes, labels, rels, preds = [], [], [], []
    first_box, last_box, first_rel, last_rel, split = [], [], [], [], []
    n_box = n_rel = 0
    for im in images:
        b = np.asarray(im.get('boxes', []), dtype=np.float64).reshape(-1, 4)
        lab = np.asarray(im.get('labels', []), dtype=np.int64).reshape(-1)
        r = np.asarray(im.get('rels', []), dtype=np.int64).reshape(-1, 3)
        split.append(im.get('split', 0))
        if len(b):
            first_box.append(n_box)
            last_box.append(n_box + len(b) - 1)
        else:
            first_box.append(-1)
            last_box.append(-1)
        if len(r):
            first_rel.append(n_rel)
            last_rel.append(n_rel + len(r) - 1)
            rels.append(r[:, :2] + n_box)
            preds.append(r[:, 2:])
        else:
            first_rel.append(-1)
            last_rel.append(-1)
        boxes.append(b)
        labels.append(lab)
        n_box += len(b)
        n_rel += len(r)
    all_boxes = np.concatenate(boxes) if n_box else np.zeros((0, 4))
    with h5py.File(osp.join(root, 'VG-SGG-with-attri.h5'), 'w') as h5:
        h5['split'] = np.asarray(split, dtype=np.int64)
        h5['img_to_first_box'] = np.asarray(first_box, dtype=np.int64)
        h5['img_to_last_box'] = np.asarray(last_box, dtype=np.int64)
        h5['img_to_first_rel'] = np.asarray(first_rel, dtype=np.int64)
        h5['img_to_last_rel'] = np.asarray(last_rel, dtype=np.int64)
        h5[f'boxes_{box_scale}'] = all_boxes.astype(box_dtype)
        h5['boxes_512'] = (all_boxes / 2).astype(box_dtype)
        h5['labels'] = np.concatenate(labels).reshape(-1, 1) if n_box else np.zeros((0, 1),
                                                                                  np.int64)
        h5['attributes'] = np.zeros((n_box, 10), dtype=np.int64)
        h5['relationships'] = np.concatenate(rels) if n_rel else np.zeros((0, 2), np.int64)
        h5['predicates'] = np.concatenate(preds) if n_rel else np.zeros((0, 1), np.int64)
    dicts = dict(
        label_to_idx={c: i + 1 for i, c in enumerate(classes)},
        idx_to_label={str(i + 1): c for i, c in enumerate(classes)},
        predicate_to_idx={p: i + 1 for i, p in enumerate(predicates)},
        idx_to_predicate={str(i + 1): p for i, p in enumerate(predicates)},
        attribute_to_idx={'red': 1}, idx_to_attribute={'1': 'red'},
        object_count={c: 1 for c in classes}, predicate_count={p: 1 for p in predicates})
    with open(osp.join(root, 'VG-SGG-dicts-with-attri.json'), 'w') as f:
        json.dump(dicts, f)
    image_data = [dict(image_id=im['image_id'], width=im['width'], height=im['height'])
                  for im in images]
    for pos, entry in image_data_extra:
        image_data.insert(pos, entry)
    with open(osp.join(root, 'image_data.json'), 'w') as f:
        json.dump(image_data, f)
    if make_images:
        for im in images:
            size = im.get('file_size', (im['width'], im['height']))
            Image.new('RGB', tuple(size), (90, 120, 150)).save(
                osp.join(root, 'VG_100K', f"{im['image_id']}.jpg"))
    return root


def random_images(rng, num_images, num_classes=3, num_predicates=3, test_every=3):
    """Random VG-style images (some without relations) for pipeline tests."""
    images = []
    for i in range(num_images):
        w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        n = int(rng.integers(2, 6))
        scale = 1024 / max(w, h)
        wh = rng.uniform(5, 30, size=(n, 2)) * scale
        c = rng.uniform(15, 40, size=(n, 2)) * scale
        r = int(rng.integers(0, 5)) if i % 4 else 0
        s = rng.integers(0, n, size=r)
        o = (s + rng.integers(1, n, size=r)) % n
        images.append(dict(image_id=100 + i, width=w, height=h,
                           split=2 if i % test_every == test_every - 1 else 0,
                           boxes=np.column_stack((c, wh)).round(),
                           labels=rng.integers(1, num_classes + 1, size=n),
                           rels=np.column_stack((s, o,
                                                 rng.integers(1, num_predicates + 1, size=r)))))
    return images
