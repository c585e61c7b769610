"""The motion-only shapes videos: deterministic, readable, list files, motion sets the class."""
import hashlib
import os.path as osp

import numpy as np

from ovkit.shapes import VIDEO_CLASSES, WRITERS, make_shapes


def _digest(root):
    h = hashlib.sha256()
    for name in ('train_list.txt', 'val_list.txt'):
        h.update(open(osp.join(root, name), 'rb').read())
    return h.hexdigest()


def _read(path):
    import av
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format='rgb24') for f in c.decode(video=0)])


def test_video_kind_writes_lists_with_and_without_suffix(tmp_path):
    assert 'video' in WRITERS
    paths = make_shapes(str(tmp_path), seed=1, kinds=['video'],
                        options=dict(video=dict(per_class_train=2, per_class_val=1)))['video']
    train = open(paths['train_list']).read().split('\n')[:-1]
    plain = open(paths['train_list_nosuffix']).read().split('\n')[:-1]
    assert len(train) == 2 * len(VIDEO_CLASSES)
    assert [ln.replace('.avi ', ' ') for ln in train] == plain
    for line in train:
        rel, label = line.split()
        assert rel.split('/')[0] == VIDEO_CLASSES[int(label)]
        assert osp.isfile(osp.join(paths['videos'], rel))
    clip = _read(osp.join(paths['videos'], train[0].split()[0]))
    assert clip.shape == (16, 48, 48, 3)
    again = make_shapes(str(tmp_path / 'b'), seed=1, kinds=['video'],
                        options=dict(video=dict(per_class_train=2, per_class_val=1)))['video']
    assert _digest(osp.dirname(again['train_list'])) == _digest(osp.dirname(paths['train_list']))


def _centroid_and_area(clip):
    """Per frame: the row of the shape's centre and its pixel count (shape = far from bg)."""
    bg = np.median(clip, axis=0)  # the shape moves, so the median over time is background
    mask = np.abs(clip.astype(float) - bg).sum(-1) > 60
    rows = np.array([np.nonzero(m)[0].mean() for m in mask])
    return rows, mask.sum((1, 2))


def test_the_motion_decides_the_class(tmp_path):
    paths = make_shapes(str(tmp_path), seed=2, kinds=['video'],
                        options=dict(video=dict(per_class_train=3, per_class_val=1)))['video']
    for line in open(paths['train_list']):
        rel, label = line.split()
        rows, area = _centroid_and_area(_read(osp.join(paths['videos'], rel)))
        cls = VIDEO_CLASSES[int(label)]
        if cls == 'move_up':
            assert rows[-1] < rows[0] - 10
        elif cls == 'move_down':
            assert rows[-1] > rows[0] + 10
        elif cls == 'grow':
            assert area[-1] > 1.3 * area[0]
        else:
            assert area[0] > 1.3 * area[-1]
