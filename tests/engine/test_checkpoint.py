"""Atomic checkpoints: a kill at any moment leaves a loadable latest checkpoint; broken ones are
named in one line together with the newest good one."""
import os
import os.path as osp
import signal
import subprocess
import sys
import zipfile

import pytest
import torch

import ovkit  # noqa: F401  (compat: weights-only loading of mmengine checkpoints)
from ovkit.engine.checkpoint import (
    TMP_SUFFIX,
    CheckpointError,
    atomic_write,
    check_last_checkpoint,
    check_resume_checkpoint,
    checkpoint_problem,
    latest_good_checkpoint,
)
from tests.conftest import REPO
from tests.engine.toy import run_toy


@pytest.fixture(autouse=True)
def _restore_determinism():
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def _save(path, step):
    torch.save(dict(meta=dict(iter=step), state_dict=dict(w=torch.arange(1000.0))), path)
    return str(path)


def test_checkpoint_problem_tells_the_kinds_apart(tmp_path):
    good = _save(tmp_path / 'good.pth', 1)
    assert checkpoint_problem(good) is None
    data = open(good, 'rb').read()
    (tmp_path / 'half.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'text.pth').write_text('not a checkpoint\n')
    with zipfile.ZipFile(tmp_path / 'other.zip', 'w') as zf:
        zf.writestr('readme.txt', 'hello')
    assert checkpoint_problem(str(tmp_path / 'half.pth')).startswith('truncated')
    assert checkpoint_problem(str(tmp_path / 'empty.pth')).startswith('empty file')
    assert checkpoint_problem(str(tmp_path / 'text.pth')).startswith('not a torch checkpoint')
    assert 'without data.pkl' in checkpoint_problem(str(tmp_path / 'other.zip'))
    assert checkpoint_problem(str(tmp_path / 'missing.pth')) == 'no such file'
    # What the structural check accepts, torch loads.
    assert torch.load(good, weights_only=True)['meta']['iter'] == 1


def test_resume_from_a_broken_file_names_the_newest_good_one(tmp_path):
    for step in (1, 2):
        _save(tmp_path / f'iter_{step}.pth', step)
    data = open(tmp_path / 'iter_2.pth', 'rb').read()
    (tmp_path / 'iter_3.pth').write_bytes(data[:100])
    (tmp_path / 'iter_4.pth').write_text('oops')
    assert latest_good_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_2.pth')
    for bad in ('iter_3.pth', 'iter_4.pth'):
        with pytest.raises(CheckpointError) as info:
            check_resume_checkpoint(str(tmp_path / bad))
        msg = str(info.value)
        assert '\n' not in msg and str(tmp_path / bad) in msg
        assert f'--resume {tmp_path / "iter_2.pth"}' in msg
    os.remove(tmp_path / 'iter_1.pth')
    os.remove(tmp_path / 'iter_2.pth')
    with pytest.raises(CheckpointError, match='train from scratch'):
        check_resume_checkpoint(str(tmp_path / 'iter_3.pth'))


def test_empty_last_checkpoint_names_the_newest_good_one(tmp_path):
    _save(tmp_path / 'iter_5.pth', 5)
    assert check_last_checkpoint(str(tmp_path)) is None  # nothing to resume: not an error here
    (tmp_path / 'last_checkpoint').write_text('')
    with pytest.raises(CheckpointError, match=r'last_checkpoint is empty.*iter_5\.pth'):
        check_last_checkpoint(str(tmp_path))
    atomic_write(str(tmp_path / 'last_checkpoint'), str(tmp_path / 'iter_5.pth'))
    assert check_last_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_5.pth')
    assert not list(tmp_path.glob(f'*{TMP_SUFFIX}'))


def test_old_checkpoint_removed_only_after_the_new_one_is_complete(tmp_path):
    """max_keep_ckpts=1: while iter_k is written, iter_{k-1} exists and last_checkpoint
    names it."""
    from mmengine.hooks import Hook

    class Observer(Hook):
        seen = []

        def before_save_checkpoint(self, runner, checkpoint):
            files = sorted(f for f in os.listdir(runner.work_dir) if f.startswith('iter_'))
            last = open(osp.join(runner.work_dir, 'last_checkpoint')).read() \
                if osp.exists(osp.join(runner.work_dir, 'last_checkpoint')) else None
            self.seen.append((checkpoint['meta']['iter'], files, last))

    work = str(tmp_path / 'w')
    run_toy(work, max_iters=4, checkpoint=dict(type='CheckpointHook', interval=1,
                                               by_epoch=False, max_keep_ckpts=1),
            hooks=[Observer()])
    for step, files, last in Observer.seen[1:]:
        assert files == [f'iter_{step - 1}.pth'], (step, files)
        assert last == osp.join(work, f'iter_{step - 1}.pth')
    assert sorted(f for f in os.listdir(work) if f.startswith('iter_')) == ['iter_4.pth']


def test_previous_best_checkpoint_removed_only_after_the_new_best_is_written(tmp_path):
    from mmengine.hooks import Hook

    class Observer(Hook):
        bests = []

        def before_save_checkpoint(self, runner, checkpoint):
            if 'optimizer' not in checkpoint:  # best checkpoints are saved without it
                self.bests.append(sorted(f for f in os.listdir(runner.work_dir)
                                         if f.startswith('best_')))

    work = str(tmp_path / 'w')
    run_toy(work, max_iters=6, val_interval=2, hooks=[Observer()],
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False,
                            save_best='evaluations', rule='greater'))
    assert len(Observer.bests) == 3
    # While the 2nd and 3rd best are written, the previous best is still on disk.
    assert Observer.bests[0] == [] and all(len(b) == 1 for b in Observer.bests[1:])
    assert Observer.bests[1] != Observer.bests[2]
    assert sorted(f for f in os.listdir(work) if f.startswith('best_')) == \
        ['best_evaluations_iter_6.pth']


_CHILD = r'''
import sys, time
sys.path.insert(0, {repo!r})
from mmengine.fileio.backends import LocalBackend
from tests.engine.toy import run_toy
put = LocalBackend.put

def slow_put(self, obj, filepath):
    if 'iter_3' in str(filepath):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
            f.flush()
        print('WRITING', flush=True)
        time.sleep(300)
    return put(self, obj, filepath)

LocalBackend.put = slow_put
run_toy({work!r}, max_iters=4, exact_resume={atomic},
        checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=1))
'''


def _kill_while_saving(work, atomic):
    child = subprocess.Popen(
        [sys.executable, '-c', _CHILD.format(repo=REPO, work=work, atomic=atomic)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    try:
        for line in child.stdout:
            if line.strip() == 'WRITING':
                break
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


def test_kill_during_save_leaves_the_previous_checkpoint(tmp_path):
    work = str(tmp_path / 'atomic')
    _kill_while_saving(work, atomic=True)
    last = check_last_checkpoint(work)
    assert last == osp.join(work, 'iter_2.pth')
    assert torch.load(last, weights_only=True)['meta']['iter'] == 2
    assert not osp.exists(osp.join(work, 'iter_3.pth'))  # the half file has a temporary name
    assert os.listdir(work).count(f'iter_3.pth{TMP_SUFFIX}') == 1
    # --resume continues from it, and the unfinished file is cleaned up.
    run_toy(work, resume_from='auto', max_iters=4,
            checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=1))
    assert check_last_checkpoint(work) == osp.join(work, 'iter_4.pth')
    assert not [f for f in os.listdir(work) if f.endswith(TMP_SUFFIX)]


def test_plain_checkpoint_hook_loses_everything_in_the_same_kill(tmp_path):
    """The control: mmengine's CheckpointHook deleted iter_2 before writing iter_3, which is
    left half-written under its real name."""
    work = str(tmp_path / 'plain')
    _kill_while_saving(work, atomic=False)
    assert not osp.exists(osp.join(work, 'iter_2.pth'))
    assert checkpoint_problem(osp.join(work, 'iter_3.pth')).startswith('truncated')
    with pytest.raises(CheckpointError, match='train from scratch'):
        check_last_checkpoint(work)
