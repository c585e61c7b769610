"""The real tools on shapes data: 2-process CPU training, evaluation, resume, dist test."""
import glob
import json
import os.path as osp
import pickle
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_cmd

pytestmark = pytest.mark.e2e
CONFIG = osp.join(REPO, 'configs', 'shapes', 'faster_rcnn_tiny.py')


def _scalars(work_dir):
    """Logged training scalars of every run under work_dir, in order."""
    rows = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if 'loss' in r]


@pytest.fixture(scope='module')
def trained(shapes_workspace):
    work = shapes_workspace / 'work_dirs' / 'frcnn'
    out = run_cmd(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), CONFIG, '2',
                   '--work-dir', str(work)], cwd=shapes_workspace)
    return work, out


def test_dist_train_two_cpu_processes(trained):
    work, out = trained
    assert 'Distributed training: True' in out
    assert 'distributed run: world size 2, backend gloo' in out, out[-3000:]
    assert (work / 'iter_40.pth').exists()
    rows = _scalars(str(work))
    assert rows[-1]['iter'] == 40
    first = sum(r['loss'] for r in rows[:2]) / 2
    last = sum(r['loss'] for r in rows[-2:]) / 2
    assert last < first, f'loss did not fall: {first} -> {last}'


def test_test_py_prints_coco_metrics_and_dumps(trained, shapes_workspace):
    work, _ = trained
    out_pkl = work / 'preds.pkl'
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'test.py'), CONFIG,
                   str(work / 'iter_40.pth'), '--work-dir', str(work / 'test'),
                   '--out', str(out_pkl)], cwd=shapes_workspace)
    assert 'coco/bbox_mAP_50:' in out
    with open(out_pkl, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 16 and 'pred_instances' in preds[0]
    assert 'gt_instances' not in preds[0]  # mmdet's DumpDetResults, not mmengine's DumpResults


def test_dist_test_two_processes(trained, shapes_workspace):
    work, _ = trained
    out = run_cmd(['bash', osp.join(REPO, 'tools', 'dist_test.sh'), CONFIG,
                   str(work / 'iter_40.pth'), '2', '--work-dir', str(work / 'dtest')],
                  cwd=shapes_workspace)
    assert 'coco/bbox_mAP_50:' in out


def test_resume_continues_from_saved_iteration(trained, shapes_workspace):
    work, _ = trained
    runs_before = len(glob.glob(str(work / '2*')))
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'train.py'), CONFIG,
                   '--work-dir', str(work), '--resume',
                   '--cfg-options', 'train_cfg.max_iters=50', 'train_cfg.val_interval=1000',
                   'default_hooks.checkpoint.interval=10'], cwd=shapes_workspace)
    assert 'resumed epoch: 0, iter: 40' in out
    assert (work / 'iter_50.pth').exists()
    iters = [r['iter'] for r in _scalars(str(work))]
    assert min(i for i in iters if i > 40) > 40 and max(iters) == 50
    # Logs of earlier runs are kept: a new timestamped folder per run.
    assert len(glob.glob(str(work / '2*'))) == runs_before + 1


def test_bad_checkpoint_and_resume_paths_are_clear(shapes_workspace):
    for cmd in ([sys.executable, osp.join(REPO, 'tools', 'test.py'), CONFIG, 'missing.pth'],
                [sys.executable, osp.join(REPO, 'tools', 'train.py'), CONFIG,
                 '--resume', 'missing.pth']):
        proc = subprocess.run(cmd, cwd=shapes_workspace, capture_output=True, text=True)
        assert proc.returncode != 0
        assert 'missing.pth' in proc.stderr.splitlines()[-1]
