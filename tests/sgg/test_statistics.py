"""Frequency statistics: hand-counted fg/bg matrices, SGB's prior, the cache and its key."""
import os
import time

import numpy as np
import pytest

import ovkit.sgg  # noqa: F401
from ovkit.sgg import statistics
from ovkit.sgg.dataset import VGSGGDataset
from ovkit.sgg.statistics import get_statistics
from tests.sgg.vg_fixture import write_vg

IMAGES = [
    # A: boxes 0 and 1 overlap, 2 is far; the (0, 2) relation does not overlap
    dict(image_id=1, width=1024, height=1024, split=0,
         boxes=[[50, 50, 100, 100], [100, 100, 100, 100], [800, 800, 50, 50]],
         labels=[1, 2, 3], rels=[[0, 1, 1], [0, 1, 1], [0, 2, 2]]),
    # B: its only relation does not overlap: the image leaves the statistics split
    dict(image_id=2, width=1024, height=1024, split=0,
         boxes=[[50, 50, 20, 20], [500, 500, 20, 20]], labels=[2, 2], rels=[[0, 1, 3]]),
    # C: boxes [0,0,10,10] and [10,0,20,10]: overlap only with +1 (kept by the relation
    # filter) but not with positive area (so bg counts all ordered pairs)
    dict(image_id=3, width=1024, height=1024, split=0,
         boxes=[[5, 5, 10, 10], [15, 5, 10, 10]], labels=[3, 1], rels=[[1, 0, 2]]),
    # test images never count
    dict(image_id=4, width=1024, height=1024, split=2,
         boxes=[[50, 50, 100, 100], [100, 100, 100, 100]], labels=[1, 2], rels=[[0, 1, 1]]),
]


@pytest.fixture
def root(tmp_path):
    return write_vg(str(tmp_path / 'vg'), IMAGES)


def expected():
    fg = np.zeros((4, 4, 4), np.int64)
    fg[1, 2, 1] = 2                  # A, duplicates counted
    fg[1, 3, 2] = 1                  # C: subject box 1 (class 1), object box 0 (class 3)
    bg = np.zeros((4, 4), np.int64)
    bg[1, 2] = bg[2, 1] = 1          # A: the overlapping ordered pairs
    bg[3, 1] = bg[1, 3] = 1          # C: no positive-area overlap -> all ordered pairs
    return fg, bg


def test_counts_and_prior_follow_sgb(root):
    ds = VGSGGDataset(data_root=root, split='test', num_val_im=0, serialize_data=False)
    stats = get_statistics(ds)
    fg, bg = expected()
    np.testing.assert_array_equal(stats['bg_matrix'], bg)
    fg[:, :, 0] = bg + 1
    np.testing.assert_array_equal(stats['fg_matrix'], fg)
    assert stats['fg_matrix'].dtype == np.int64 and stats['fg_matrix'].shape == (4, 4, 4)
    # prior = log(fg / fg.sum(-1) + 1e-3): cell (1, 2) = [bg+1 = 2, 2, 0, 0] / 4
    np.testing.assert_allclose(stats['pred_dist'][1, 2],
                               np.log(np.array([0.5, 0.5, 0, 0]) + 1e-3), rtol=1e-6)
    np.testing.assert_allclose(stats['pred_dist'][0, 0], np.log([1 + 1e-3, 1e-3, 1e-3, 1e-3]),
                               rtol=1e-6)
    assert stats['pred_dist'].dtype == np.float32
    assert stats['obj_classes'] == ('__background__', 'cat', 'dog', 'tree')
    assert stats['rel_classes'] == ('__background__', 'on', 'near', 'has')
    assert stats['num_images'] == 2


def test_train_split_after_val(root):
    # val takes the first image: only B (dropped) and C remain
    stats = get_statistics(dict(type='VGSGGDataset', data_root=root, num_val_im=1))
    assert stats['num_images'] == 1 and stats['fg_matrix'][1, 3, 2] == 1
    assert stats['fg_matrix'][..., 1:].sum() == 1


def test_config_dict_and_wrappers_need_no_images(root):
    for f in os.listdir(os.path.join(root, 'VG_100K')):
        os.remove(os.path.join(root, 'VG_100K', f))
    cfg = dict(type='VGSGGDataset', data_root=root, num_val_im=0, split='val')
    a = get_statistics(cfg)
    b = get_statistics(dict(type='RepeatDataset', times=2, dataset=cfg))
    np.testing.assert_array_equal(a['fg_matrix'], b['fg_matrix'])
    np.testing.assert_array_equal(a['fg_matrix'][..., 1:], expected()[0][..., 1:])


def test_cache_is_keyed_on_files_and_options(root, tmp_path, monkeypatch):
    cache = str(tmp_path / 'work')
    cfg = dict(type='VGSGGDataset', data_root=root, num_val_im=0)
    first = get_statistics(cfg, cache_dir=cache)
    assert len(os.listdir(cache)) == 1

    def boom(**kw):
        raise AssertionError('recomputed although cached')
    real = statistics.compute_statistics
    monkeypatch.setattr(statistics, 'compute_statistics', boom)
    again = get_statistics(cfg, cache_dir=cache)
    for key in ('fg_matrix', 'bg_matrix', 'pred_dist'):
        np.testing.assert_array_equal(again[key], first[key])
    assert again['obj_classes'] == first['obj_classes']
    # another filter option or a changed file -> another key -> recomputed
    monkeypatch.setattr(statistics, 'compute_statistics', real)
    get_statistics(dict(cfg, num_val_im=1), cache_dir=cache)
    assert len(os.listdir(cache)) == 2
    time.sleep(0.01)
    write_vg(root, IMAGES[1:], make_images=False)          # image A gone
    changed = get_statistics(cfg, cache_dir=cache)
    assert len(os.listdir(cache)) == 3
    assert changed['num_images'] == 1 and changed['fg_matrix'][1, 2, 1] == 0


def test_rejects_other_datasets():
    with pytest.raises(TypeError, match='VGSGGDataset'):
        get_statistics(object())
