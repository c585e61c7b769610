"""Precise BN: the averages of per-batch statistics, Paddle's epochs, one rank = two ranks."""
import os
import socket
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from ovkit.pptsm.precise_bn import PaddlePreciseBNHook, update_bn_stats


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5))


def make_batches(n, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(6, 3, 5, 5, generator=g) * (1 + i) + i for i in range(n)]


def expected_stats(model, batches):
    """Mean over batches of the batch mean and the unbiased batch variance, layer by layer."""
    feats = {}
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: feats.setdefault(k, []).append(i[0]))
             for k, m in enumerate(model) if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for b in batches:
            model(b)
    for h in hooks:
        h.remove()
    out = {}
    for k, xs in feats.items():
        arrs = [x.double().numpy().transpose(1, 0, 2, 3).reshape(x.shape[1], -1) for x in xs]
        out[k] = (np.mean([a.mean(1) for a in arrs], 0),
                  np.mean([a.var(1, ddof=1) for a in arrs], 0))
    return out


def test_statistics_are_the_mean_of_batch_statistics():
    model = make_model()
    batches = make_batches(4, seed=1)
    ref = make_model()
    ref.load_state_dict(model.state_dict())
    expected = expected_stats(ref.train(), batches)
    tracked = model[1].num_batches_tracked.clone()
    model.train()
    assert update_bn_stats(model, iter(batches), 4, model) == 2
    for k, (mean, var) in expected.items():
        assert np.allclose(model[k].running_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        assert np.allclose(model[k].running_var.numpy(), var, rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1 and torch.equal(model[1].num_batches_tracked, tracked)


def test_eval_mode_bns_are_left_alone_and_short_loaders_fail():
    model = make_model().train()
    model[1].eval()  # as norm_eval / frozen stages leave it
    before = model[1].running_mean.clone()
    assert update_bn_stats(model, iter(make_batches(2, 0)), 2, model) == 1
    assert torch.equal(before, model[1].running_mean)
    with pytest.raises(RuntimeError, match='expected 3 batches'):
        update_bn_stats(model, iter(make_batches(2, 0)), 3, model)


@pytest.mark.parametrize('max_epochs,due', [(12, [0, 5, 10, 11]), (5, [0, 4]), (1, [0])])
def test_runs_on_the_epochs_paddle_uses(max_epochs, due):
    hook = PaddlePreciseBNHook(num_iters=2, interval=5)
    got = [e for e in range(max_epochs)
           if hook._due(SimpleNamespace(epoch=e, max_epochs=max_epochs))]
    assert got == due


def _worker(rank, world, port, batches, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.distributed.init_process_group('gloo', rank=rank, world_size=world)
    model = make_model().train()
    mine = batches[rank::world]
    update_bn_stats(model, iter(mine), len(mine), model)
    state = {k: v for k, v in model.state_dict().items() if 'running' in k}
    # the skip report: rank r drew 10 + r samples, r + 1 of which failed to load
    state['skips'] = PaddlePreciseBNHook._report_skips(
        10 + rank, [f'r{rank}_{i}.avi' for i in range(rank + 1)])
    torch.save(state, os.path.join(out_dir, f'rank{rank}.pth'))
    torch.distributed.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    """Statistics and the skip report of two ranks are those of one process over all."""
    batches = make_batches(6, seed=3)
    single = make_model().train()
    update_bn_stats(single, iter(batches), 6, single)
    # Forked, not spawned: spawned children would import torch and mmaction again (~10 s each).
    ctx = mp.get_context('fork')
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(rank, 2, port, batches, str(tmp_path)))
             for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    for p in procs:
        if p.is_alive():  # a hung collective: do not leave it behind
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    ranks = [torch.load(tmp_path / f'rank{rank}.pth') for rank in range(2)]
    # every rank reports the sums over ranks: 1 + 2 failed of 10 + 11 drawn
    assert ranks[0]['skips'] == ranks[1]['skips'] == (3, 21)
    for key, value in single.state_dict().items():
        if 'running' in key:
            assert torch.equal(ranks[0][key], ranks[1][key]), key  # same on every rank
            assert torch.allclose(ranks[0][key], value, rtol=1e-5, atol=1e-6), key


def test_samples_that_failed_to_load_are_taken_out_and_counted(monkeypatch):
    """The pass reads the training loader outside the train loop: the skip records that
    ovkit.engine.skips attaches to a batch (replaced samples) are removed before the model sees
    the batch, then counted and named in one warning."""
    from ovkit.engine.skips import SKIP_KEY
    from ovkit.pptsm import precise_bn

    seen = []

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = make_model()

        def data_preprocessor(self, data, training):
            seen.append(sorted(data))
            return dict(inputs=torch.stack(data['inputs']))

        def forward(self, inputs, mode):
            return self.body(inputs)

    records = ['', 'a.avi (ValueError: bad)', 'b.avi (x)\na.avi (ValueError: bad)']
    batches = [dict(inputs=list(b), **{SKIP_KEY: [''] * 5 + [recs]})
               for b, recs in zip(make_batches(3, 0), records)]
    logs = []
    monkeypatch.setattr(precise_bn, 'print_log', lambda msg, **kw: logs.append(msg))
    hook = PaddlePreciseBNHook(num_iters=3, interval=1)
    runner = SimpleNamespace(model=Net(), train_dataloader=batches, epoch=0, max_epochs=1)
    hook.after_train_epoch(runner)
    assert seen == [['inputs']] * 3
    # 18 samples reached the model, 3 failed (and were replaced): 21 drawn
    assert 'precise BN: 3 of 21 samples failed to load and were replaced by others: a.avi ' \
        '(ValueError: bad); b.avi (x)' in logs
