"""Scene graphs through the real tools on shapes data: 2-process CPU training, test.py with
R@K / mR@K, --resume, Motifs against the frequency-only baseline, SGCls and SGDet on the tiny
detector."""
import glob
import json
import math
import os.path as osp
import re
import sys

import pytest

from tests.conftest import REPO, run_cmd

pytestmark = pytest.mark.e2e
CFG = osp.join(REPO, 'configs', 'sgg')
MOTIFS = osp.join(CFG, 'motifs_r18-fpn-tiny_predcls_shapes-vg150.py')
FREQ = osp.join(CFG, 'freq_r18-fpn-tiny_predcls_shapes-vg150.py')
DETECTOR = osp.join(CFG, 'faster-rcnn_r18-fpn-tiny_shapes-vg150.py')
TRAIN = osp.join(REPO, 'tools', 'train.py')
TEST = osp.join(REPO, 'tools', 'test.py')
NO_VAL = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']  # test.py evaluates


def metrics(out):
    """The sgg/* numbers of the last evaluation printed in ``out``."""
    line = [ln for ln in out.splitlines() if 'sgg/R@50:' in ln][-1]
    return {k: float(v) for k, v in re.findall(r'(sgg/[\w@-]+): (-?[\d.]+|nan)', line)}


def loss_rows(work):
    rows = []
    for path in sorted(glob.glob(osp.join(str(work), '*', 'vis_data', 'scalars.json'))):
        rows += [json.loads(line) for line in open(path) if line.strip()]
    return [r for r in rows if 'loss' in r]


@pytest.fixture(scope='module')
def shapes_workspace(tmp_path_factory):
    """A working folder holding data/shapes/vg150, as after
    `python tools/data/make_shapes.py --out data/shapes --kinds vg150`."""
    ws = tmp_path_factory.mktemp('sgg_ws')
    run_cmd([sys.executable, osp.join(REPO, 'tools', 'data', 'make_shapes.py'), '--out',
             'data/shapes', '--kinds', 'vg150'], cwd=ws)
    return ws


@pytest.fixture(scope='module')
def motifs(shapes_workspace):
    work = shapes_workspace / 'work_dirs' / 'motifs_predcls'
    out = run_cmd(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), MOTIFS, '2',
                   '--work-dir', str(work)], cwd=shapes_workspace)
    return work, out


def test_two_process_training(motifs):
    work, out = motifs
    assert 'distributed run: world size 2, backend gloo' in out
    rows = loss_rows(work)
    assert rows[-1]['iter'] == 200 and all(math.isfinite(r['loss_rel']) for r in rows)
    assert sum(r['loss_rel'] for r in rows[-2:]) < 0.75 * sum(r['loss_rel'] for r in rows[:2])
    assert (work / 'iter_200.pth').exists()
    # the frequency statistics were computed once and cached in the work dir
    assert glob.glob(str(work / 'vg_sgg_statistics_*.npz'))


@pytest.fixture(scope='module')
def motifs_test(motifs, shapes_workspace):
    work, _ = motifs
    return run_cmd([sys.executable, TEST, MOTIFS, str(work / 'iter_200.pth'),
                    '--work-dir', str(work / 'test')], cwd=shapes_workspace)


def test_test_py_prints_recall_and_mean_recall(motifs_test):
    got = metrics(motifs_test)
    for k in (20, 50, 100):
        for name in ('R', 'mR', 'ngR', 'ng-mR', 'A'):
            assert 0.0 <= got[f'sgg/{name}@{k}'] <= 1.0, name
    assert 'per-predicate' in motifs_test.lower() or 'left of' in motifs_test


def test_resume(motifs, shapes_workspace):
    work, _ = motifs
    out = run_cmd([sys.executable, TRAIN, MOTIFS, '--work-dir', str(work), '--resume',
                   '--cfg-options', 'train_cfg.max_iters=210', *NO_VAL], cwd=shapes_workspace)
    assert 'resumed epoch: 0, iter: 200' in out
    assert (work / 'iter_210.pth').exists()


def test_motifs_beats_the_frequency_baseline(motifs_test, shapes_workspace):
    """Spatial predicates are decided by the boxes: a model that reads them must beat one that
    only knows the label pair (measured on the 48 test images)."""
    work = shapes_workspace / 'work_dirs' / 'freq_predcls'
    run_cmd([sys.executable, TRAIN, FREQ, '--work-dir', str(work), '--cfg-options', *NO_VAL],
            cwd=shapes_workspace)
    out = run_cmd([sys.executable, TEST, FREQ, str(work / 'iter_200.pth'),
                   '--work-dir', str(work / 'test')], cwd=shapes_workspace)
    motifs_r50 = metrics(motifs_test)['sgg/R@50']
    freq_r50 = metrics(out)['sgg/R@50']
    print(f'shapes PredCls R@50 (test): Motifs {motifs_r50:.4f}, frequency baseline '
          f'{freq_r50:.4f}')
    assert motifs_r50 > freq_r50 + 0.15, (motifs_r50, freq_r50)


@pytest.fixture(scope='module')
def detector(shapes_workspace):
    work = shapes_workspace / 'work_dirs' / 'detector'
    run_cmd(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), DETECTOR, '2',
             '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=40'],
            cwd=shapes_workspace)
    assert (work / 'iter_40.pth').exists()
    return work / 'iter_40.pth'


@pytest.mark.parametrize('mode', ['sgcls', 'sgdet'])
def test_sgcls_and_sgdet_run_end_to_end_on_the_tiny_detector(mode, detector, shapes_workspace):
    cfg = osp.join(CFG, f'motifs_r18-fpn-tiny_{mode}_shapes-vg150.py')
    work = shapes_workspace / 'work_dirs' / f'motifs_{mode}'
    out = run_cmd([sys.executable, TRAIN, cfg, '--work-dir', str(work), '--cfg-options',
                   f'model.detector_checkpoint={detector}', 'train_cfg.max_iters=10',
                   'default_hooks.logger.interval=5', *NO_VAL], cwd=shapes_workspace)
    assert 'loaded the frozen detector' in out
    rows = loss_rows(work)
    assert rows and all(math.isfinite(r['loss_refine_obj']) for r in rows)
    out = run_cmd([sys.executable, TEST, cfg, str(work / 'iter_10.pth'), '--work-dir',
                   str(work / 'test'), '--cfg-options', 'test_dataloader.dataset.num_im=16'],
                  cwd=shapes_workspace)
    got = metrics(out)
    assert 0.0 <= got['sgg/R@100'] <= 1.0 and 0.0 <= got['sgg/mR@100'] <= 1.0
    if mode == 'sgdet':
        assert 'sgg/A@100' not in got  # no GT pairs to rank in SGDet
