"""Predicate re-balancing: the cap per predicate, the seed, train only, the cache, the charts."""
import json
import os
import os.path as osp

import numpy as np
import pytest

import ovkit.sgg  # noqa: F401  (registers)
from ovkit.sgg import rebalance
from ovkit.sgg.dataset import VGSGGDataset
from ovkit.sgg.rebalance import PredicateRebalanceDataset, cap_relations, frequency_figure
from tests.sgg.vg_fixture import write_vg

PREDICATES = ('on', 'near', 'has')


def long_tailed_images(num=40, seed=0):
    """Images whose predicates follow 70 / 22 / 8 %; a few images hold only 'on'."""
    rng = np.random.default_rng(seed)
    images = []
    for i in range(num):
        n = int(rng.integers(2, 6))
        c = rng.uniform(100, 900, size=(n, 2))
        wh = rng.uniform(40, 200, size=(n, 2))
        r = int(rng.integers(1, 6))
        s = rng.integers(0, n, size=r)
        o = (s + rng.integers(1, n, size=r)) % n
        p = rng.choice([1, 2, 3], p=[0.7, 0.22, 0.08], size=r) if i % 5 else np.ones(r, int)
        images.append(dict(image_id=500 + i, width=64, height=64, split=2 if i % 8 == 7 else 0,
                           boxes=np.column_stack((c, wh)).round(),
                           labels=rng.integers(1, 4, size=n), rels=np.column_stack((s, o, p))))
    return images


@pytest.fixture(scope='module')
def vg_root(tmp_path_factory):
    return write_vg(str(tmp_path_factory.mktemp('vg')), long_tailed_images(),
                    predicates=PREDICATES)


def inner(root, split='train'):
    return dict(type='VGSGGDataset', data_root=root, split=split, num_val_im=4,
                pipeline=[])


def stored_counts(ds):
    rels = [ds.capped_relations(i) for i in range(len(ds))]
    return np.bincount(np.concatenate(rels)[:, 2], minlength=4)[1:]


def original(root, split='train'):
    ds = VGSGGDataset(data_root=root, split=split, num_val_im=4, filter_duplicate_rels=False)
    return [ds.get_data_info(i) for i in range(len(ds))]


def test_cap_holds_per_predicate_and_keeps_the_rest(vg_root):
    before = np.bincount(np.concatenate([d['relations'] for d in original(vg_root)])[:, 2],
                         minlength=4)[1:]
    assert before[0] > 20 > before[2]                     # 'on' is the head, 'has' the tail
    ds = PredicateRebalanceDataset(inner(vg_root), max_per_predicate=12, seed=0)
    after = stored_counts(ds)
    np.testing.assert_array_equal(after, np.minimum(before, 12))
    np.testing.assert_array_equal(ds.counts_before, before)
    np.testing.assert_array_equal(ds.counts_after, after)
    # 'drop': no image is left without relations; kept relations are the image's own rows
    by_id = {d['img_id']: d['relations'] for d in original(vg_root)}
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        kept = ds.capped_relations(i)
        assert len(kept) > 0
        rows = {tuple(r) for r in by_id[info['img_id']].tolist()}
        assert {tuple(r) for r in kept.tolist()} <= rows
        # the per-fetch rule (one predicate per pair) applies on top of the cap
        pairs = info['relations'][:, :2].tolist()
        assert len(pairs) == len({tuple(p) for p in pairs})
    assert len(ds) < len(by_id)


def test_cap_relations_matches_a_loop():
    rng = np.random.default_rng(3)
    rels = [np.column_stack((np.zeros((n, 2), int), rng.integers(1, 4, size=n)))
            for n in rng.integers(0, 6, size=30)]
    kept = cap_relations(rels, 5, seed=7)
    # the rule written as the hand-made scripts do: visit shuffled images, keep under the cap
    count = {}
    expect = [None] * len(rels)
    for img in np.random.default_rng(7).permutation(len(rels)):
        keep = []
        for row, p in enumerate(rels[img][:, 2]):
            if count.get(p, 0) < 5:
                count[p] = count.get(p, 0) + 1
                keep.append(row)
        expect[img] = keep
    assert [k.tolist() for k in kept] == expect


def test_same_seed_same_subset_other_seed_other(vg_root):
    def subset(seed):
        ds = PredicateRebalanceDataset(inner(vg_root), max_per_predicate=8, seed=seed)
        return [(ds.get_data_info(i)['img_id'], ds.capped_relations(i).tolist())
                for i in range(len(ds))]

    assert subset(1) == subset(1)
    assert subset(1) != subset(2)


def test_empty_image_policy(vg_root):
    drop = PredicateRebalanceDataset(inner(vg_root), max_per_predicate=3, seed=0)
    keep = PredicateRebalanceDataset(inner(vg_root), max_per_predicate=3, seed=0,
                                     empty_images='keep')
    total = len(original(vg_root))
    assert len(keep) == total > len(drop)
    emptied = [i for i in range(len(keep)) if len(keep.capped_relations(i)) == 0]
    assert len(emptied) == total - len(drop)
    np.testing.assert_array_equal(stored_counts(keep), stored_counts(drop))
    with pytest.raises(ValueError, match='empty_images'):
        PredicateRebalanceDataset(inner(vg_root), empty_images='all')


def test_train_only_and_val_test_untouched(vg_root, tmp_path):
    val_before, test_before = original(vg_root, 'val'), original(vg_root, 'test')
    for split in ('val', 'test'):
        with pytest.raises(ValueError, match='training split only'):
            PredicateRebalanceDataset(inner(vg_root, split))
    PredicateRebalanceDataset(inner(vg_root), max_per_predicate=2, cache_dir=str(tmp_path))
    for split, before in (('val', val_before), ('test', test_before)):
        after = original(vg_root, split)
        assert len(after) == len(before)
        for a, b in zip(after, before):
            np.testing.assert_array_equal(a['relations'], b['relations'])


def test_cache_keyed_on_files_and_options(vg_root, tmp_path, monkeypatch):
    cache_dir = str(tmp_path / 'cache')
    first = PredicateRebalanceDataset(inner(vg_root), max_per_predicate=6, seed=0,
                                      cache_dir=cache_dir)
    files = os.listdir(cache_dir)
    assert len(files) == 1 and files[0].startswith('vg_sgg_rebalance_')

    calls = []
    real = rebalance.cap_relations
    monkeypatch.setattr(rebalance, 'cap_relations', lambda *a: calls.append(a) or real(*a))
    again = PredicateRebalanceDataset(inner(vg_root), max_per_predicate=6, seed=0,
                                      cache_dir=cache_dir)
    assert calls == []                                    # read from the cache
    assert [again.capped_relations(i).tolist() for i in range(len(again))] == \
        [first.capped_relations(i).tolist() for i in range(len(first))]
    PredicateRebalanceDataset(inner(vg_root), max_per_predicate=7, seed=0, cache_dir=cache_dir)
    PredicateRebalanceDataset(inner(vg_root), max_per_predicate=6, seed=1, cache_dir=cache_dir)
    assert len(calls) == 2 and len(os.listdir(cache_dir)) == 3
    # a changed annotation file (new mtime) is never served from the old cache
    h5 = osp.join(vg_root, 'VG-SGG-with-attri.h5')
    st = os.stat(h5)
    os.utime(h5, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    PredicateRebalanceDataset(inner(vg_root), max_per_predicate=6, seed=0, cache_dir=cache_dir)
    assert len(calls) == 3


def test_charts_log_scale_frequency_order(vg_root, tmp_path):
    out = str(tmp_path / 'run')
    ds = PredicateRebalanceDataset(inner(vg_root), max_per_predicate=10, out_dir=out)
    for tag in ('before', 'after'):
        path = osp.join(out, f'predicate_frequency_{tag}.png')
        with open(path, 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
    with open(osp.join(out, 'predicate_rebalance.json')) as f:
        report = json.load(f)
    assert report['after'] == dict(zip(PREDICATES, map(int, ds.counts_after)))
    fig = frequency_figure(np.array([3, 50, 0, 7]), ['a', 'b', 'c', 'd'], 'x')
    ax = fig.axes[0]
    assert ax.get_yscale() == 'log'
    assert [t.get_text() for t in ax.get_xticklabels()] == ['b (50)', 'd (7)', 'a (3)', 'c (0)']


def test_runner_config_builds_and_trains_dataloader(vg_root, tmp_path):
    """Under a Runner config: the wrapper gives samples to mmengine's dataloader, the
    frequency statistics still see the full train split."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import Runner

    from ovkit.sgg.statistics import get_statistics
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadSGGAnnotations'),
                dict(type='Resize', scale=(64, 64), keep_ratio=True),
                dict(type='PackSGGInputs')]
    cfg = dict(type='PredicateRebalanceDataset', max_per_predicate=5, seed=0,
               cache_dir=str(tmp_path),
               dataset=dict(inner(vg_root), pipeline=pipeline))
    with DefaultScope.overwrite_default_scope('mmdet'):
        loader = Runner.build_dataloader(dict(
            batch_size=2, num_workers=0, dataset=cfg,
            sampler=dict(type='DefaultSampler', shuffle=True),
            batch_sampler=dict(type='AspectRatioBatchSampler'),
            collate_fn=dict(type='pseudo_collate')))
        batch = next(iter(loader))
    assert len(batch['data_samples']) == 2
    assert all('gt_relations' in s for s in batch['data_samples'])
    stats = get_statistics(loader.dataset)
    full = VGSGGDataset(data_root=vg_root, split='train', num_val_im=4)
    assert stats['num_images'] == get_statistics(full)['num_images']
