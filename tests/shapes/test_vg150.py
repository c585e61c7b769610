"""The VG150-format shapes scene graphs: SGB's file layout, box-decidable spatial predicates,
a long-tailed predicate distribution and a zero-shot triplet file."""
import json

import h5py
import numpy as np
import pytest
from PIL import Image

from ovkit.shapes import SHAPE_CLASSES, SHAPE_PREDICATES, make_shapes
from ovkit.shapes.vg150 import spatial_predicate


def _pixel_boxes(h5, image_data):
    """h5 cx,cy,w,h@1024 -> xyxy pixels per image (SGB's conversion, without clipping)."""
    boxes = h5['boxes_1024'][:]
    boxes[:, :2] = boxes[:, :2] - boxes[:, 2:] / 2
    boxes[:, 2:] = boxes[:, :2] + boxes[:, 2:]
    out = []
    for i, im in enumerate(image_data):
        b0, b1 = h5['img_to_first_box'][i], h5['img_to_last_box'][i] + 1
        out.append(boxes[b0:b1] / 1024 * max(im['width'], im['height']))
    return out


def test_sgb_layout(tmp_path):
    paths = make_shapes(str(tmp_path), seed=0, kinds=['vg150'],
                        options=dict(vg150=dict(num_train=40, num_test=12)))['vg150']
    root = tmp_path / 'vg150'
    assert paths['h5'] == str(root / 'VG-SGG-with-attri.h5')
    with open(root / 'VG-SGG-dicts-with-attri.json') as f:
        dicts = json.load(f)
    assert [dicts['idx_to_label'][str(i + 1)] for i in range(len(SHAPE_CLASSES))] == list(
        SHAPE_CLASSES)
    assert {p: dicts['predicate_to_idx'][p] for p in SHAPE_PREDICATES} == {
        p: i + 1 for i, p in enumerate(SHAPE_PREDICATES)}
    with open(root / 'image_data.json') as f:
        image_data = json.load(f)
    with h5py.File(root / 'VG-SGG-with-attri.h5') as h5:
        n = len(image_data)
        assert n == 52 and h5['split'].shape == (n, )
        assert (h5['split'][:40] == 0).all() and (h5['split'][40:] == 2).all()
        assert h5['boxes_1024'].dtype == np.int32 and h5['boxes_1024'].shape[1] == 4
        assert h5['labels'].shape == (h5['boxes_1024'].shape[0], 1)
        assert h5['attributes'].shape == (h5['boxes_1024'].shape[0], 10)
        assert h5['relationships'].shape[1] == 2 and h5['predicates'].shape[1] == 1
        assert h5['labels'][:].min() >= 1 and h5['labels'][:].max() <= len(SHAPE_CLASSES)
        # relations point at boxes of their own image
        for i in range(n):
            r0, r1 = h5['img_to_first_rel'][i], h5['img_to_last_rel'][i]
            if r0 >= 0:
                rel = h5['relationships'][r0:r1 + 1]
                assert rel.min() >= h5['img_to_first_box'][i]
                assert rel.max() <= h5['img_to_last_box'][i]
        # the long side of every box set is at 1024 scale: no coordinate beyond it
        assert h5['boxes_1024'][:, :2].max() <= 1024
    for im in image_data[:5]:
        with Image.open(root / 'VG_100K' / f"{im['image_id']}.jpg") as img:
            assert img.size == (im['width'], im['height'])
    assert np.load(root / 'zeroshot_triplet.npy').shape[1] == 3


def test_predicates_follow_from_boxes_long_tail_and_zero_shot(tmp_path):
    make_shapes(str(tmp_path), seed=1, kinds=['vg150'])
    root = tmp_path / 'vg150'
    with open(root / 'image_data.json') as f:
        image_data = json.load(f)
    agree = total = 0
    triplets = {0: set(), 2: set()}
    counts = np.zeros(len(SHAPE_PREDICATES) + 1, np.int64)
    with h5py.File(root / 'VG-SGG-with-attri.h5') as h5:
        boxes = _pixel_boxes(h5, image_data)
        labels = h5['labels'][:, 0]
        for i, im in enumerate(image_data):
            r0, r1 = h5['img_to_first_rel'][i], h5['img_to_last_rel'][i]
            if r0 < 0:
                continue
            b0 = h5['img_to_first_box'][i]
            for (s, o), p in zip(h5['relationships'][r0:r1 + 1] - b0,
                                 h5['predicates'][r0:r1 + 1, 0]):
                counts[p] += 1
                triplets[int(h5['split'][i])].add((int(labels[b0 + s]), int(labels[b0 + o]),
                                                   int(p)))
                total += 1
                got = spatial_predicate(boxes[i][s], boxes[i][o], im['width'], im['height'])
                # 'near' pairs may carry their direction as a second relation
                agree += got == p or SHAPE_PREDICATES[got - 1] == 'near'
    # decided by the boxes the h5 stores (rounded at 1024 scale): all but threshold cases
    assert agree / total > 0.97, agree / total
    # long tail: every predicate occurs, the head is several times the tail
    fg = counts[1:]
    assert (fg > 0).all() and fg.max() >= 4 * fg.min(), fg
    assert fg[SHAPE_PREDICATES.index('left of')] > fg[SHAPE_PREDICATES.index('inside')]
    # zero-shot rows: in test, never in train
    zs = {tuple(int(v) for v in row) for row in np.load(root / 'zeroshot_triplet.npy')}
    assert zs and zs <= triplets[2] and not zs & triplets[0]


def _predicate_counts(root):
    with h5py.File(root / 'VG-SGG-with-attri.h5') as h5:
        return np.bincount(h5['predicates'][:, 0], minlength=len(SHAPE_PREDICATES) + 1)[1:]


def test_longtail_predicate_mix_is_deterministic_and_steeper(tmp_path):
    opts = dict(num_train=150, num_test=10)
    counts = {}
    for name, mix in (('a', 'longtail'), ('b', 'longtail'), ('default', 'default')):
        make_shapes(str(tmp_path / name), seed=3, kinds=['vg150'],
                    options=dict(vg150=dict(opts, predicate_mix=mix)))
        counts[name] = _predicate_counts(tmp_path / name / 'vg150')
    assert np.array_equal(counts['a'], counts['b'])  # same seed, same annotations
    with h5py.File(tmp_path / 'a' / 'vg150' / 'VG-SGG-with-attri.h5') as a, \
            h5py.File(tmp_path / 'b' / 'vg150' / 'VG-SGG-with-attri.h5') as b:
        assert np.array_equal(a['relationships'][:], b['relationships'][:])
    share = {k: c / c.sum() for k, c in counts.items()}
    head, tail = SHAPE_PREDICATES.index('left of'), SHAPE_PREDICATES.index('contains')
    # every predicate still occurs, but the tail is a much smaller share than by default
    assert (counts['a'] > 0).all()
    assert share['a'][head] > share['default'][head]
    assert share['a'][tail] < 0.5 * share['default'][tail]
    assert counts['a'].max() >= 15 * counts['a'].min(), counts['a']


def test_unknown_predicate_mix_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="predicate_mix='zipf'.*longtail"):
        make_shapes(str(tmp_path), kinds=['vg150'],
                    options=dict(vg150=dict(num_train=2, num_test=1, predicate_mix='zipf')))
