"""Exact resume: continuing from any checkpoint ends bit-identical to an uninterrupted run."""
import glob
import os
import os.path as osp
import random
import shutil

import numpy as np
import pytest
import torch

import ovkit  # noqa: F401  (compat: weights-only loading of mmengine checkpoints)
from ovkit.engine.resume import (
    RESUME_KEY,
    _SkipFirstBatches,
    get_rng_state,
    load_non_persistent_buffers,
    non_persistent_buffers,
    set_rng_state,
)
from tests.engine.toy import run_toy


@pytest.fixture(autouse=True)
def _restore_determinism():
    """randomness.deterministic switches torch's global flag on; give other tests theirs."""
    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


def continue_from(ckpt, work_dir, **kwargs):
    os.makedirs(work_dir)
    start = osp.join(work_dir, osp.basename(ckpt))
    shutil.copy(ckpt, start)
    return run_toy(work_dir, resume_from=start, **kwargs)


def assert_identical(a, b):
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f'{len(differ)} of {len(a)} tensors differ: {differ[:4]}'


def test_rng_state_round_trip_and_weights_only():
    state = get_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(()).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected
    # What a checkpoint stores must load under torch.load(weights_only=True).
    import io
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    set_rng_state(torch.load(buf, weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == expected


def test_non_persistent_buffers_saved_and_restored():
    from tests.engine.toy import ToyResumeNet
    src, dst = ToyResumeNet(), ToyResumeNet()
    src.queue.normal_()
    saved = non_persistent_buffers(src)
    assert set(saved) == {'queue'} and 'queue' not in src.state_dict()
    assert load_non_persistent_buffers(dst, saved) == (['queue'], [])
    assert torch.equal(dst.queue, src.queue)
    assert load_non_persistent_buffers(dst, saved) == ([], [])
    assert load_non_persistent_buffers(dst, {'queue': torch.zeros(3, 8), 'nope': torch.zeros(1)}) \
        == ([], ['queue', 'nope'])


def test_skip_keeps_a_stateful_batch_sampler_where_it_was():
    """mmdet's AspectRatioBatchSampler buffers indices between batches: skipping whole
    batches of it (not indices) continues exactly where an uninterrupted epoch is."""
    from mmdet.datasets.samplers import AspectRatioBatchSampler
    from mmengine.dataset import DefaultSampler

    class Shapes(torch.utils.data.Dataset):
        def __len__(self):
            return 30

        def __getitem__(self, i):
            return i

        def get_data_info(self, i):
            return dict(width=10 + i % 3, height=11)

    def batch_sampler():
        return AspectRatioBatchSampler(DefaultSampler(Shapes(), shuffle=True, seed=3), 4)

    whole = list(batch_sampler())
    loader = torch.utils.data.DataLoader(Shapes(), batch_sampler=batch_sampler())
    called = []
    object.__setattr__(loader, 'batch_sampler',
                       _SkipFirstBatches(loader, loader.batch_sampler, 3,
                                         lambda: called.append(1)))
    rest = [b.tolist() for b in loader]
    assert rest == whole[3:] and called == [1]
    assert not isinstance(loader.batch_sampler, _SkipFirstBatches)
    assert [b.tolist() for b in loader] == whole  # the next epoch is whole again


@pytest.fixture(scope='module')
def iter_reference(tmp_path_factory):
    """Uninterrupted 12-iteration toy run (1 process) with a checkpoint every iteration."""
    work = tmp_path_factory.mktemp('iter_ref')
    ckpt = dict(type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=-1)
    final = run_toy(work, checkpoint=ckpt)
    return work, final, ckpt


# 4: validation runs right after this checkpoint; 7: mid-epoch; 11: the epoch (11 batches)
# is used up, the next fetch starts epoch 1.
@pytest.mark.parametrize('k', [4, 7, 11])
def test_iter_loop_resume_is_bit_identical(iter_reference, tmp_path, k):
    work, final, ckpt = iter_reference
    saved = torch.load(osp.join(work, f'iter_{k}.pth'), weights_only=True)[RESUME_KEY]
    assert saved['iter'] == k and saved['world_size'] == 1
    assert saved['ranks'][0]['data'] == dict(epoch=0, pos=k)
    resumed = continue_from(osp.join(work, f'iter_{k}.pth'), str(tmp_path / 'r'),
                            checkpoint=ckpt)
    assert_identical(final, resumed)


def test_without_the_hook_resume_differs(iter_reference, tmp_path):
    """The control: mmengine's own resume does not continue the same run."""
    work, final, ckpt = iter_reference
    resumed = continue_from(osp.join(work, 'iter_4.pth'), str(tmp_path / 'r'),
                            checkpoint=ckpt, exact_resume=False)
    assert any(not torch.equal(final[k], resumed[k]) for k in final)


def test_epoch_loop_resume_mid_epoch_and_at_epoch_end(tmp_path):
    """EpochBasedTrainLoop: mmengine restarts the epoch; here it continues inside it."""
    by_iter = dict(type='CheckpointHook', interval=1, by_epoch=False, max_keep_ckpts=-1)
    by_epoch = dict(type='CheckpointHook', interval=1, by_epoch=True, max_keep_ckpts=-1)
    ref_i = run_toy(str(tmp_path / 'ref_i'), max_iters=2, loop='epoch', checkpoint=by_iter,
                    val_interval=1)
    ref_e = run_toy(str(tmp_path / 'ref_e'), max_iters=2, loop='epoch', checkpoint=by_epoch,
                    val_interval=1)
    assert_identical(ref_i, ref_e)  # where checkpoints are taken changes nothing
    state = torch.load(str(tmp_path / 'ref_i' / 'iter_15.pth'), weights_only=True)[RESUME_KEY]
    assert state['ranks'][0]['data'] == dict(epoch=1, pos=4)
    assert_identical(ref_i, continue_from(str(tmp_path / 'ref_i' / 'iter_15.pth'),
                                          str(tmp_path / 'r15'), max_iters=2, loop='epoch',
                                          checkpoint=by_iter, val_interval=1))
    assert_identical(ref_e, continue_from(str(tmp_path / 'ref_e' / 'epoch_1.pth'),
                                          str(tmp_path / 'e1'), max_iters=2, loop='epoch',
                                          checkpoint=by_epoch, val_interval=1))


def test_resume_without_saved_state_warns(iter_reference, tmp_path):
    work, _, ckpt = iter_reference
    stripped = torch.load(osp.join(work, 'iter_10.pth'), weights_only=True)
    del stripped[RESUME_KEY]
    os.makedirs(tmp_path / 'r')
    torch.save(stripped, str(tmp_path / 'r' / 'iter_10.pth'))
    run_toy(str(tmp_path / 'r'), resume_from=str(tmp_path / 'r' / 'iter_10.pth'),
            checkpoint=ckpt)
    logs = ''.join(open(p).read() for p in glob.glob(str(tmp_path / 'r' / '*' / '*.log')))
    assert 'without exact-resume state' in logs
