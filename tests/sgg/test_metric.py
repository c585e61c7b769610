"""SGGMetric: data samples -> SGB numbers; batch size, 2 processes, table, chart, files."""
import json
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.evaluator import Evaluator
from mmengine.structures import InstanceData

import ovkit.sgg  # noqa: F401
from ovkit.sgg.evaluation import evaluate_sgg
from ovkit.sgg.metric import SGGMetric, load_triplets

P = 6                                  # predicates (plus background)
C = 5                                  # object classes
PREDICATES = ('__background__', ) + tuple(f'rel{i}' for i in range(1, P + 1))
META = dict(classes=tuple(f'obj{i}' for i in range(C)), predicates=PREDICATES)


def random_image(rng, mode):
    """One image in SGB's fields (classes 1-based), with the odd cases mixed in."""
    g = int(rng.integers(1, 7))
    xy = rng.uniform(0, 60, size=(g, 2))
    gt_boxes = np.concatenate([xy, xy + rng.uniform(4, 40, size=(g, 2))], 1).astype(np.float32)
    gt_classes = rng.integers(1, C + 1, size=g)
    r = int(rng.integers(0, 6)) if g > 1 else 0
    s = rng.integers(0, g, size=r)
    o = (s + rng.integers(1, max(g, 2), size=r)) % max(g, 1)
    gt_rels = np.column_stack((s, o, rng.integers(1, P + 1, size=r))).astype(np.int64)
    if r and rng.random() < 0.3:
        gt_rels = np.concatenate([gt_rels, gt_rels[:1]])              # duplicate GT
    if mode == 'sgdet':
        n = int(rng.integers(1, 8))
        src = rng.integers(0, g, size=n)
        boxes = gt_boxes[src] + rng.normal(0, 2, size=(n, 4)).astype(np.float32)
        classes = np.where(rng.random(n) < 0.8, gt_classes[src], rng.integers(1, C + 1, n))
        obj = rng.uniform(0.1, 1, n).astype(np.float32)
    else:
        n, boxes = g, gt_boxes.copy()
        classes = np.where(rng.random(n) < 0.8, gt_classes, rng.integers(1, C + 1, n))
        obj = np.ones(n, np.float32) if mode == 'predcls' else rng.uniform(0.1, 1, n).astype(
            np.float32)
    ii, jj = np.nonzero(~np.eye(n, dtype=bool))
    pairs = np.column_stack((ii, jj)) if len(ii) else np.zeros((1, 2), np.int64)
    if rng.random() < 0.1:
        pairs = pairs[:0]
    logits = rng.normal(0, 1, size=(len(pairs), P + 1)).astype(np.float32)
    rel_scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    order = np.argsort(-(rel_scores[:, 1:].max(1) * obj[pairs[:, 0]] * obj[pairs[:, 1]]),
                       kind='stable')
    return dict(gt_boxes=gt_boxes, gt_classes=gt_classes, gt_rels=gt_rels,
                pred_boxes=boxes.astype(np.float32), pred_classes=classes, obj_scores=obj,
                pred_rel_inds=pairs[order].astype(np.int64),
                rel_scores=rel_scores[order].astype(np.float32))


def to_sample(img, idx, with_ori=True, scale=0.5):
    """The data sample a relation model returns for this image (interface of SGG_INTERFACE)."""
    meta = dict(img_id=1000 + idx, sample_idx=idx, scale_factor=(scale, scale))
    if with_ori:
        meta['ori_gt_bboxes'] = img['gt_boxes']
    ds = DetDataSample(metainfo=meta)
    t = torch.as_tensor
    ds.gt_instances = InstanceData(bboxes=t(img['gt_boxes'] * scale),
                                   labels=t(img['gt_classes'] - 1))
    ds.gt_relations = InstanceData(pairs=t(img['gt_rels'][:, :2]), labels=t(img['gt_rels'][:, 2]))
    ds.pred_instances = InstanceData(bboxes=t(img['pred_boxes']),
                                     labels=t(img['pred_classes'] - 1),
                                     scores=t(img['obj_scores']))
    rs = t(img['rel_scores'])
    ds.pred_relations = InstanceData(pairs=t(img['pred_rel_inds']), scores=rs,
                                     labels=1 + rs[:, 1:].argmax(1) if len(rs) else
                                     torch.zeros(0, dtype=torch.long))
    return ds


def data(mode, n=60, seed=0):
    rng = np.random.default_rng(seed)
    imgs = [random_image(rng, mode) for _ in range(n)]
    zs = np.unique(np.column_stack((rng.integers(1, C + 1, 40), rng.integers(1, C + 1, 40),
                                    rng.integers(1, P + 1, 40))), axis=0)
    return imgs, zs


def same(a, b):
    """Dicts of floats equal, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a)


def run_metric(samples, batch, mode, zs, out_dir, size=None, **kw):
    ev = Evaluator([SGGMetric(mode=mode, zeroshot_triplets=zs, out_dir=out_dir, **kw)])
    ev.dataset_meta = META
    for i in range(0, len(samples), batch):
        ev.process(samples[i:i + batch])
    return ev.evaluate(size or len(samples))       # size: the whole dataset's


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_metric_equals_core_for_any_batch_size(mode, tmp_path):
    imgs, zs = data(mode)
    core = evaluate_sgg(imgs, mode, P, zeroshot_triplets=zs)
    samples = [to_sample(im, i) for i, im in enumerate(imgs)]
    results = [run_metric(samples, b, mode, zs, str(tmp_path)) for b in (1, 7, len(samples))]
    assert same(results[0], results[1]) and same(results[0], results[2])
    keys = [k for k in core if '@' in k and not isinstance(core[k], dict)]
    assert sorted(results[0]) == sorted(f'sgg/{k}' for k in keys)
    for k in keys:
        assert results[0][f'sgg/{k}'] == core[k] or (np.isnan(core[k]) and
                                                     np.isnan(results[0][f'sgg/{k}']))
    assert ('sgg/A@100' in results[0]) == (mode != 'sgdet')
    assert core['num_images'] < len(imgs)             # skipped images occur in the data


def test_gt_boxes_rescaled_when_no_original_boxes(tmp_path):
    imgs, zs = data('sgdet', 30, seed=3)
    a = run_metric([to_sample(im, i) for i, im in enumerate(imgs)], 4, 'sgdet', zs,
                   str(tmp_path))
    b = run_metric([to_sample(im, i, with_ori=False) for i, im in enumerate(imgs)], 4,
                   'sgdet', zs, str(tmp_path))
    assert same(a, b)


def test_order_of_gathered_results_does_not_matter(tmp_path):
    imgs, zs = data('sgcls', 40, seed=5)
    samples = [to_sample(im, i) for i, im in enumerate(imgs)]
    rev = run_metric(samples[::-1], 3, 'sgcls', zs, str(tmp_path))
    assert same(rev, run_metric(samples, 3, 'sgcls', zs, str(tmp_path)))


def _dist_worker(rank, world, port, mode, out):
    import torch.distributed as dist
    torch.set_num_threads(1)            # forked: keep the child out of the parent's OpenMP pool
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        imgs, zs = data(mode, 45, seed=11)
        samples = [to_sample(im, i) for i, im in enumerate(imgs)]
        # DistributedSampler's layout: padded to a multiple of world, interleaved by rank
        idx = list(range(len(samples)))
        idx += idx[:(-len(idx)) % world]
        res = run_metric([samples[i] for i in idx[rank::world]], 2, mode, zs, None,
                         size=len(samples), plot=False)
        with open(f'{out}.{rank}', 'w') as f:
            json.dump(res, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize('mode', ['sgcls'])
def test_two_processes_equal_one(mode, tmp_path):
    import socket

    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    out = str(tmp_path / 'res')
    # fork, not spawn: the children need not import torch, mmdet and ovkit again (~30 s)
    mp.start_processes(_dist_worker, args=(2, port, mode, out), nprocs=2, join=True,
                       start_method='fork')
    imgs, zs = data(mode, 45, seed=11)
    single = run_metric([to_sample(im, i) for i, im in enumerate(imgs)], 5, mode, zs,
                        str(tmp_path))
    single = json.loads(json.dumps(single))
    for rank in range(2):
        with open(f'{out}.{rank}') as f:
            assert same(json.load(f), single)


def test_table_chart_and_json(tmp_path, capsys):
    from mmengine.logging import MMLogger
    log_dir = tmp_path / 'work' / '20260101_000000'
    log_dir.mkdir(parents=True)
    MMLogger.get_instance('sgg_metric_test', log_file=str(log_dir / 'run.log'))
    imgs, zs = data('predcls', 30, seed=2)
    res = run_metric([to_sample(im, i) for i, im in enumerate(imgs)], 8, 'predcls', zs, None)
    log = (log_dir / 'run.log').read_text()
    assert 'per-predicate recall' in log and 'rel3' in log and 'ng-mR' in log
    pngs = [f for f in os.listdir(log_dir) if f.endswith('.png')]
    jsons = [f for f in os.listdir(log_dir) if f.endswith('.json')]
    assert len(pngs) == 1 and osp.getsize(log_dir / pngs[0]) > 5000
    with open(log_dir / jsons[0]) as f:
        saved = json.load(f)
    assert saved['R@50'] == res['sgg/R@50'] and saved['mode'] == 'predcls'
    assert set(saved['per_predicate']) == set(PREDICATES[1:])
    mean = np.mean([v['mR@100'] for v in saved['per_predicate'].values()])
    assert mean == pytest.approx(res['sgg/mR@100'])


def test_zeroshot_file_formats(tmp_path):
    rows = np.array([[1, 2, 3], [4, 5, 6]])
    torch.save(torch.as_tensor(rows), tmp_path / 'zeroshot_triplet.pytorch')
    np.save(tmp_path / 'z.npy', rows)
    np.savetxt(tmp_path / 'z.txt', rows, fmt='%d')
    for name in ('zeroshot_triplet.pytorch', 'z.npy', 'z.txt'):
        np.testing.assert_array_equal(load_triplets(str(tmp_path / name)), rows)
    with pytest.raises(FileNotFoundError, match='zeroshot_triplet.pytorch in Scene-Graph'):
        SGGMetric(zeroshot_triplets=str(tmp_path / 'missing.pytorch'))
    np.save(tmp_path / 'bad.npy', rows[:, :2])
    with pytest.raises(ValueError, match=r'\[Z, 3\]'):
        load_triplets(str(tmp_path / 'bad.npy'))


def test_bad_config_and_inputs():
    with pytest.raises(ValueError, match="mode must be one of"):
        SGGMetric(mode='phrdet')
    imgs, _ = data('predcls', 2)
    sample = to_sample(imgs[0], 0).to_dict()
    del sample['gt_relations']
    with pytest.raises(KeyError, match='LoadSGGAnnotations and PackSGGInputs'):
        SGGMetric().process({}, [sample])


def test_metric_arguments_are_checked():
    with pytest.raises(ValueError, match=r'SGGMetric: topks must be integers in 1..100'):
        SGGMetric(topks=(20, 50, 200))
    with pytest.raises(ValueError, match=r'SGGMetric: iou_thr must be a number in \(0, 1\]'):
        SGGMetric(iou_thr=5)
    with pytest.raises(ValueError, match='num_predicates must be a positive int'):
        SGGMetric(num_predicates=0)
    assert SGGMetric(topks=[100, 1]).topks == (100, 1)


def test_malformed_predictions_name_the_sample():
    imgs, _ = data('sgdet', 6, seed=1)
    img = next(im for im in imgs if len(im['gt_rels']) and len(im['pred_rel_inds']) > 1)
    rs = torch.as_tensor(img['rel_scores'])
    n, m = len(img['pred_boxes']), len(rs)

    def check(field, value, match):
        ds = to_sample(img, 3)
        ds.set_metainfo(dict(img_path='data/vg/VG_100K/1003.jpg'))
        ds = ds.to_dict()                  # a model may hand over any shapes
        ds['pred_relations'][field] = value
        metric = SGGMetric(mode='sgdet')
        metric.dataset_meta = META
        with pytest.raises(ValueError, match=match) as err:
            metric.process({}, [ds])
        assert 'img_id=1003, img_path=data/vg/VG_100K/1003.jpg' in str(err.value)

    check('scores', rs[:, :-1], r'pred_relations.scores has 6 columns, expected P \+ 1 = 7')
    check('scores', rs.reshape(-1), r'rel_scores must have shape \[M, P \+ 1\] = \[%d' % m)
    check('scores', rs[:-1], r'rel_scores must have shape \[M, P \+ 1\]')
    check('scores', torch.where(torch.arange(7) == 2, float('nan'), rs),
          'rel_scores has non-finite values')
    check('pairs', torch.full((m, 2), n), f'pred_rel_inds indexes predicted boxes {n}..{n}, '
          f'but there are {n}')
    check('pairs', torch.zeros(m, 3, dtype=torch.long), r'pred_rel_inds must have shape')
