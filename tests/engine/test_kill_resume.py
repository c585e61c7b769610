"""The real launchers SIGKILLed mid-training, then ``--resume``: no worker outlives its
launcher, the latest checkpoint loads, and the final weights equal an uninterrupted run's."""
import glob
import os
import os.path as osp
import subprocess
import sys
import time

import pytest
import torch

import ovkit  # noqa: F401  (compat: weights-only loading of mmengine checkpoints)
from ovkit.engine.checkpoint import check_last_checkpoint
from tests.conftest import REPO
from tests.engine.toy import dump_toy_config

pytestmark = pytest.mark.e2e


def _launch(nproc, config, work, resume=False, kill_at=None):
    if nproc == 1:
        cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), config]
    else:
        cmd = ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, str(nproc)]
    cmd += ['--work-dir', str(work)] + (['--resume', 'auto'] if resume else [])
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=REPO, OMP_NUM_THREADS='1')
    env.pop('TOY_KILL_AT', None)
    if kill_at is not None:
        env['TOY_KILL_AT'] = str(kill_at)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)


def _final_weights(work):
    with open(osp.join(work, 'last_checkpoint')) as f:
        return torch.load(f.read().strip(), weights_only=True)['state_dict']


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


@pytest.mark.parametrize('nproc', [1, 2])
def test_killed_at_three_iterations_resumes_bit_identical(tmp_path, nproc):
    config = dump_toy_config(tmp_path / 'toy.py', work_dir=str(tmp_path / 'unused'))
    ref = _launch(nproc, config, tmp_path / 'ref')
    assert ref.returncode == 0, (ref.stdout + ref.stderr)[-3000:]

    work = tmp_path / 'killed'
    # Checkpoints every 2 iterations: kills at 3 and 9 lose an iteration, the kill at 6
    # comes right after a save; with 2 processes an epoch is 6 batches, so the resume from
    # iteration 8 continues inside the second epoch.
    for i, kill_at in enumerate((3, 6, 9)):
        proc = _launch(nproc, config, work, resume=i > 0, kill_at=kill_at)
        assert proc.returncode == -9, (proc.stdout + proc.stderr)[-3000:]
        pids = [int(open(p).read()) for p in glob.glob(str(work / 'pids' / 'rank*'))]
        assert len(pids) == nproc
        deadline = time.time() + 30
        while any(_alive(p) for p in pids) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in pids), 'a worker outlived its launcher'
        latest = check_last_checkpoint(str(work))
        assert latest.endswith(f'iter_{kill_at - kill_at % 2}.pth')
    proc = _launch(nproc, config, work, resume=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'Exact resume: random state of rank 0 restored' in out
    a, b = _final_weights(tmp_path / 'ref'), _final_weights(work)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'{len(differ)} of {len(a)} tensors differ after resume'


@pytest.mark.timeout(1900)  # above the command's own 1800 s
def test_stress_script_quick_on_shapes(shapes_workspace):
    """tools/analysis/stress_resume.py --quick: the shapes detector (AspectRatioBatchSampler,
    mmdet's RandomSampler, RandomFlip) killed at a random moment in 2 processes, resumed."""
    proc = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'analysis', 'stress_resume.py'),
         osp.join(REPO, 'configs', 'shapes', 'faster_rcnn_tiny.py'), '--quick', '--nproc', '2',
         '--work-dir', 'work_dirs/stress'],
        cwd=shapes_workspace, capture_output=True, text=True, timeout=1800,
        env=dict(os.environ, PYTHONPATH=REPO))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'loadable latest checkpoints: 1/1' in out
    assert 'bit-identical final weights: 1/1' in out
    assert 'orphaned workers: 0' in out


def test_exit_rate_tool_counts_exit_codes(tmp_path):
    """tools/analysis/exit_rate.py (the before/after figures of docs/reliability.md), one run
    each way on the toy."""
    config = dump_toy_config(tmp_path / 'toy.py', work_dir=str(tmp_path / 'unused'))
    for flag, mode in (([], 'with'), (['--without-teardown'], 'without')):
        proc = subprocess.run(
            [sys.executable, osp.join(REPO, 'tools', 'analysis', 'exit_rate.py'), config,
             '--runs', '1'] + flag, cwd=tmp_path, capture_output=True, text=True, timeout=900,
            env=dict(os.environ, PYTHONPATH=REPO))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        assert f"2-process runs {mode} ovkit's exit teardown: " in out, out[-3000:]
