"""Bad-input corpus through the real tools and launchers, 1 and 2 processes: each case ends in
one ``error:`` line naming the key, the file and the fix (no traceback, torchrun never starts
for a bad path), or in a counted skip. The preflight cases themselves are in test_preflight.py;
here only the way a user meets them."""
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, run_cmd
from tests.engine import damage

pytestmark = pytest.mark.e2e
FRCNN = osp.join(REPO, 'configs', 'shapes', 'faster_rcnn_tiny.py')
TRAIN_SH = osp.join(REPO, 'tools', 'dist_train.sh')
TEST_SH = osp.join(REPO, 'tools', 'dist_test.sh')
TRAIN_PY = osp.join(REPO, 'tools', 'train.py')
TEST_PY = osp.join(REPO, 'tools', 'test.py')


def fails(cmd, cwd, timeout=600):
    """Run a command that must stop on bad input; returns its stderr lines."""
    env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f'exit {proc.returncode}\n{out[-4000:]}'
    assert 'Traceback' not in out, out[-4000:]
    errors = [line for line in out.splitlines() if line.startswith('error:')]
    assert len(errors) == 1, out[-4000:]
    return errors[0], out


@pytest.fixture
def ws(shapes_workspace, tmp_path):
    return damage.copy_workspace(shapes_workspace, tmp_path)


def test_launcher_arguments(shapes_workspace):
    for args in ([TRAIN_SH, FRCNN, '0'], [TRAIN_SH, FRCNN, '-1'], [TRAIN_SH, FRCNN, 'two'],
                 [TEST_SH, FRCNN, 'x.pth', '0']):
        error, out = fails(['bash'] + args, shapes_workspace)
        assert error == f"error: NPROC must be a whole number of processes >= 1, got " \
                        f"'{args[-1]}'" and 'usage:' in out
    error, out = fails(['bash', TRAIN_SH, 'configs/nope.py', '2'], shapes_workspace)
    assert error == "error: config file 'configs/nope.py' not found" and 'usage:' in out


def test_missing_data_root_two_processes_one_line(ws):
    shutil.rmtree(ws / damage.COCO)
    error, out = fails(['bash', TRAIN_SH, FRCNN, '2'], ws)
    assert error.startswith("error: train_dataloader.dataset.data_root = 'data/shapes/coco/': "
                            'not found')
    assert error.endswith('Fix: generate it with `python tools/data/make_shapes.py --out '
                          'data/shapes`')
    assert 'torch.distributed' not in out and 'Distributed training' not in out


def test_truncated_annotations_and_empty_resume_one_process(ws):
    """Two problems at once: one line each under one ``error:`` line."""
    damage.truncate(ws / damage.TRAIN_JSON)
    error, out = fails([sys.executable, TRAIN_PY, FRCNN, '--work-dir', 'fresh', '--resume'], ws)
    assert error == f'error: {FRCNN}: 2 problems stop the run:'
    lines = out[out.index(error):].splitlines()[1:3]
    assert re.match(r"  train_dataloader\.dataset\.ann_file = 'data/shapes/coco/annotations/"
                    r"train\.json': not valid JSON at line 1 column \d+: .* Fix: generate it "
                    r'with `python tools/data/make_shapes.py --out data/shapes`$', lines[0])
    assert lines[1].startswith('  --resume: nothing to resume in the work dir fresh (it has no '
                               'last_checkpoint file). Fix: leave out --resume')


def _other_model_checkpoint(path):
    """A checkpoint of another model: the same detector with 3 classes."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(FRCNN)
    cfg.model.roi_head.bbox_head.num_classes = 3
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(cfg.model)
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return str(path)


def test_checkpoints_that_cannot_be_evaluated(ws):
    # The launcher's preflight builds the model; tools/test.py alone checks in the Runner
    # (CheckpointFitHook, test_guards.py) with the same message.
    other = _other_model_checkpoint(ws / 'other.pth')
    error, out = fails(['bash', TEST_SH, FRCNN, other, '2'], ws)
    assert error.startswith(f"error: checkpoint '{other}' does not fit the model of this "
                            'config: 4 have another shape (roi_head.bbox_head.fc_cls.bias')
    assert error.endswith('or --allow-partial to evaluate with only the weights that fit.')
    assert 'torch.distributed' not in out and 'coco/bbox_mAP' not in out
    (ws / 'notes.pth').write_text('iter_40.pth is the good one\n')
    error, _ = fails([sys.executable, TEST_PY, FRCNN, 'notes.pth'], ws)
    assert error == ("error: CHECKPOINT = 'notes.pth': a text file, not a checkpoint (it starts "
                     "with 'iter_40.pth is the good one'). Fix: pass a checkpoint written by "
                     'tools/train.py (WORK_DIR/iter_N.pth)')


def test_nan_loss_two_processes_one_line(shapes_workspace, tmp_path):
    # std=0 in the data preprocessor divides every image by zero: the loss is NaN at once.
    error, out = fails(['bash', TRAIN_SH, FRCNN, '2', '--work-dir', tmp_path / 'w',
                        '--cfg-options', 'model.data_preprocessor.std=[0,0,0]'],
                       shapes_workspace)
    assert error.startswith('error: training stopped at iteration 1: the loss is not finite '
                            '(loss_rpn_cls=nan,')
    assert '(2 of 2 ranks)' in error and 'ChildFailedError' not in out
    assert not list((tmp_path / 'w').glob('iter_*.pth'))


@pytest.fixture(scope='module')
def skip_run(shapes_workspace, tmp_path_factory):
    """2-process training on shapes with three broken training images and one broken val
    image: they are skipped, counted and named; the run finishes."""
    ws = damage.copy_workspace(shapes_workspace, tmp_path_factory.mktemp('skiprun'))
    bad = [damage.image_path(ws, 'train', i) for i in (3, 20, 41)]
    damage.truncate(bad[0], 400)
    damage.random_bytes(bad[1])
    damage.remove(bad[2])
    bad_val = damage.image_path(ws, 'val', 5)
    damage.truncate(bad_val, 100)
    work = ws / 'work'
    # 64 images / (2 processes x 2): iteration 16 ends the first epoch.
    out = run_cmd(['bash', TRAIN_SH, FRCNN, '2', '--work-dir', str(work), '--cfg-options',
                   'train_cfg.max_iters=16', 'train_cfg.val_interval=16',
                   'default_hooks.checkpoint.interval=16',
                   'default_hooks.bad_samples.max_skip_ratio=0.2'], cwd=ws)
    return ws, work, out, [osp.relpath(p, ws) for p in bad], osp.relpath(bad_val, ws)


def test_bad_samples_skipped_and_counted_two_processes(skip_run):
    ws, work, out, bad, bad_val = skip_run
    assert 'distributed run: world size 2, backend gloo' in out
    logged = [line for line in out.splitlines() if 'training samples this epoch' in line]
    assert len(logged) == 1, out[-3000:]
    counts = re.search(r'skipped (\d+) of (\d+) training samples this epoch', logged[0])
    skipped, drawn = int(counts[1]), int(counts[2])
    assert skipped >= 3 and drawn == 64 + skipped  # each replaced by another, summed over ranks
    for name in bad:
        assert name in logged[0]
    assert 'FileNotFoundError' in logged[0] and 'failed to load image' in logged[0]
    assert (work / 'iter_16.pth').exists()
    assert re.search(r'coco/skipped_samples: 1\b', out)
    assert f'1 evaluation samples failed to load and are left out of CocoMetric: {bad_val}' \
        in out


def test_skipped_test_image_reported_in_metrics_two_processes(skip_run):
    ws, work, _, _, bad_val = skip_run
    # 16 iterations make weak boxes: keep every score so that COCO has detections to rank.
    out = run_cmd(['bash', TEST_SH, FRCNN, str(work / 'iter_16.pth'), '2', '--work-dir',
                   str(ws / 'test'), '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0'],
                  cwd=ws)
    assert re.search(r'coco/bbox_mAP_50: [\d.]+ .*coco/skipped_samples: 1\b', out)
    assert bad_val in out
