"""2 processes x 4 clips take the step of 1 process x 8 clips (the tiny config's recipe: DDP on
gloo, TSMOptimWrapperConstructor's lr x5/x10 groups, SGD Nesterov), except for what
BatchNorm computes from each process's own 4 clips. That is why the tiny config's 2-process
runs and 1-process runs of 8 clips differ by seed only (docs/pptsm.md, measured figures)."""
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from mmaction.registry import MODELS
from mmaction.structures import ActionDataSample
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import ovkit.pptsm  # noqa: F401
from tests.conftest import REPO

TINY = os.path.join(REPO, 'configs', 'pptsm', 'pptsm_tiny-r18_2xb4-1x1x8-24e_shapes-video.py')


def build(norm_eval):
    """The tiny recognizer and its optimiser, without the random parts (dropout, mixup)."""
    cfg = Config.fromfile(TINY)
    cfg.model.cls_head.dropout_ratio = 0
    cfg.model.data_preprocessor.pop('blending')
    cfg.model.backbone.norm_eval = norm_eval
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model.train()


def batch():
    g = torch.Generator().manual_seed(1)
    inputs = [torch.randint(0, 256, (8, 3, 24, 24), generator=g, dtype=torch.uint8)
              for _ in range(8)]
    samples = [ActionDataSample().set_gt_label(torch.tensor([i % 4])) for i in range(8)]
    return inputs, samples


def train_step(norm_eval, part=slice(None), ddp=False):
    """Parameters after one SGD step on ``batch()[part]``."""
    from mmengine.model import MMDistributedDataParallel
    cfg, model = build(norm_eval)
    if ddp:
        model = MMDistributedDataParallel(module=model, device_ids=None)  # ovkit.compat: CPU
    with DefaultScope.overwrite_default_scope('mmaction'):
        optim = build_optim_wrapper(model, cfg.optim_wrapper)
    inputs, samples = batch()
    model.train_step(dict(inputs=inputs[part], data_samples=samples[part]), optim)
    module = model.module if ddp else model
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def _worker(rank, port, norm_eval, out_dir):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group('gloo', rank=rank, world_size=2)
    params = train_step(norm_eval, slice(4 * rank, 4 * rank + 4), ddp=True)
    torch.save(params, os.path.join(out_dir, f'rank{rank}.pth'))
    torch.distributed.destroy_process_group()


def two_processes(norm_eval, out_dir):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    procs = [mp.get_context('fork').Process(target=_worker, args=(r, port, norm_eval, out_dir))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        if p.is_alive():  # a hung collective: do not leave it behind
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    return [torch.load(os.path.join(out_dir, f'rank{r}.pth')) for r in range(2)]


def max_rel_diff(a, b, init):
    """Largest difference between two updates, relative to the largest update."""
    step = max((a[k] - init[k]).abs().max().item() for k in a)
    return max((a[k] - b[k]).abs().max().item() for k in a) / step


@pytest.mark.parametrize('norm_eval,same', [(True, True), (False, False)])
def test_two_processes_of_4_clips_step_as_one_of_8(tmp_path, norm_eval, same):
    init = {k: p.detach().clone() for k, p in build(norm_eval)[1].named_parameters()}
    one = train_step(norm_eval)
    rank0, rank1 = two_processes(norm_eval, str(tmp_path))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # DDP keeps the ranks equal
    diff = max_rel_diff(one, rank0, init)
    if same:  # BN frozen: the same gradients, learning rates and update (float rounding)
        assert diff < 1e-5, diff  # measured 2e-7
    else:  # BN in training mode normalises each process's 4 clips by their own statistics
        assert diff > 1e-2, diff  # measured 0.39
