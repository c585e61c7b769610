import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from ovkit.shapes import BASE_CLASSES, NOVEL_CLASSES, SHAPE_CLASSES, WRITERS, make_shapes


def _digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            with open(os.path.join(dirpath, f), 'rb') as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()


def test_deterministic_by_seed(tmp_path):
    opts = dict(coco=dict(num_train=6, num_val=2), vg150=dict(num_train=6, num_test=2))
    make_shapes(str(tmp_path / 'a'), seed=3, options=opts)
    make_shapes(str(tmp_path / 'b'), seed=3, options=opts)
    make_shapes(str(tmp_path / 'c'), seed=4, options=opts)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b')
    assert _digest(tmp_path / 'a') != _digest(tmp_path / 'c')


def test_coco_format_and_open_vocabulary_split(tmp_path):
    paths = make_shapes(str(tmp_path), seed=0, kinds=['coco'],
                        options=dict(coco=dict(num_train=30, num_val=10, size=96)))['coco']
    train = json.load(open(paths['train']))
    base = json.load(open(paths['train_base']))
    val = json.load(open(paths['val']))
    cats = {c['id']: c for c in train['categories']}
    assert [cats[i + 1]['name'] for i in range(len(SHAPE_CLASSES))] == list(SHAPE_CLASSES)
    novel_ids = {i for i, c in cats.items() if c['split'] == 'novel'}
    assert {cats[i]['name'] for i in novel_ids} == set(NOVEL_CLASSES)
    assert set(BASE_CLASSES).isdisjoint(NOVEL_CLASSES)
    # train_base drops exactly the novel boxes; val keeps every class.
    assert all(a['category_id'] not in novel_ids for a in base['annotations'])
    n_novel = sum(a['category_id'] in novel_ids for a in train['annotations'])
    assert n_novel > 0 and len(base['annotations']) == len(train['annotations']) - n_novel
    assert any(a['category_id'] in novel_ids for a in val['annotations'])
    # Boxes lie in the image and cover drawn (non-background) pixels.
    images = {im['id']: im for im in train['images']}
    for ann in train['annotations'][:20]:
        x, y, w, h = ann['bbox']
        im = images[ann['image_id']]
        assert w > 2 and h > 2 and x >= 0 and y >= 0
        assert x + w <= im['width'] + 1e-6 and y + h <= im['height'] + 1e-6
        assert abs(ann['area'] - w * h) < 1e-2
    arr = np.asarray(Image.open(tmp_path / 'coco' / 'train' / train['images'][0]['file_name']))
    assert arr.shape == (96, 96, 3)


def test_imagefolder_tree(tmp_path):
    make_shapes(str(tmp_path), seed=0, kinds=['imagefolder'])
    assert not (tmp_path / 'coco').exists()  # only the kinds asked for
    for split, n in (('train', 40), ('val', 8)):  # the writer's defaults
        classes = sorted(os.listdir(tmp_path / 'imagefolder' / split))
        assert classes == sorted(SHAPE_CLASSES)
        for c in classes:
            assert len(os.listdir(tmp_path / 'imagefolder' / split / c)) == n


def test_unknown_kind_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown shapes kinds \\['videos'\\]"):
        make_shapes(str(tmp_path), kinds=['videos'])
    assert set(WRITERS) >= {'coco', 'imagefolder'}


def _shape_colour(path):
    """Index of the palette colour a shape is drawn in: the palette entry that most pixels lie
    within the writer's jitter (+-25 per channel) of (the background is darker and smooth)."""
    from ovkit.shapes.draw import PALETTE
    a = np.asarray(Image.open(path).convert('RGB')).astype(int)
    dist = np.abs(a[:, :, None, :] - np.array(PALETTE)[None, None]).max(-1)
    near = dist.min(-1) <= 25
    assert near.sum() > 20, path  # the shape is found
    return int(np.bincount(dist.argmin(-1)[near], minlength=len(PALETTE)).argmax())


def test_imagefolder_colour_does_not_tell_the_class(tmp_path):
    """A colour-only classifier (each colour -> its most frequent training class) is at chance
    on val: the ViT demo on this folder has to learn shapes (the writer once coloured each
    class with its own palette entry, and this classifier scored 100 %)."""
    make_shapes(str(tmp_path), seed=0, kinds=['imagefolder'],
                options=dict(imagefolder=dict(per_class_train=16, per_class_val=16)))
    colours = {}
    for split in ('train', 'val'):
        colours[split] = [(_shape_colour(p), c) for c in SHAPE_CLASSES
                          for p in sorted((tmp_path / 'imagefolder' / split / c).iterdir())]
    for c in SHAPE_CLASSES:  # every class is drawn in many colours
        assert len({k for k, cls in colours['train'] if cls == c}) >= 5
    votes = {}
    for k, c in colours['train']:
        votes.setdefault(k, []).append(c)
    rule = {k: max(set(v), key=v.count) for k, v in votes.items()}
    hits = [rule.get(k) == c for k, c in colours['val']]
    accuracy = sum(hits) / len(hits)
    assert accuracy < 0.3, accuracy  # chance is 1/8; 128 val images
