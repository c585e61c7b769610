"""PaddleWarmupCosineLR against Paddle's CustomWarmupCosineDecay formula, per iteration."""
import math

import pytest
import torch
import torch.nn as nn
from mmaction.registry import PARAM_SCHEDULERS
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from ovkit.pptsm.scheduler import PaddleWarmupCosineLR


def paddle_lr(e, s, base, w, E):
    """CustomWarmupCosineDecay: c(e) = base (1 + cos(pi e / E)) / 2, linear warmup to c(w)."""
    if e < w:
        c_w = base * (1 + math.cos(math.pi * w / E)) / 2
        return s + e * (c_w - s) / w
    return base * (1 + math.cos(math.pi * e / E)) / 2


class Tiny(nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.cls_head = nn.Linear(4, 2)


def build(epoch_length, optim_lr=1e-3, **sched):
    import ovkit.pptsm  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmaction'):
        wrapper = build_optim_wrapper(Tiny(), dict(
            type='OptimWrapper', constructor='TSMOptimWrapperConstructor',
            paramwise_cfg=dict(fc_lr5=True),
            optimizer=dict(type='SGD', lr=optim_lr, momentum=0.9, nesterov=True,
                           weight_decay=1e-4)))
        cfg = dict(type='PaddleWarmupCosineLR', by_epoch=True, convert_to_iter_based=True,
                   begin=0, **sched)
        sched = PARAM_SCHEDULERS.build(cfg, default_args=dict(optimizer=wrapper,
                                                              epoch_length=epoch_length))
    return wrapper, sched


@pytest.mark.parametrize('s,base,w,E,n', [(5e-4, 1e-3, 5, 30, 7),   # the seed's UCF101 recipe
                                          (5e-3, 1e-2, 10, 80, 3),  # K400 uniform
                                          (1e-2, 2e-2, 10, 100, 4)])  # K400 R101 dense
def test_every_iteration_equals_the_formula(s, base, w, E, n):
    wrapper, sched = build(n, optim_lr=base, warmup_start_lr=s, warmup_epochs=w, end=E)
    assert isinstance(sched, PaddleWarmupCosineLR) and not sched.by_epoch
    groups = wrapper.optimizer.param_groups
    base_group = next(g for g in groups if g['initial_lr'] == base and g['params'])
    fc_group = next(g for g in groups if g['initial_lr'] == 5 * base and g['params'])
    for it in range(E * n):
        expected = paddle_lr(it / n, s, base, w, E)
        assert base_group['lr'] == pytest.approx(expected, rel=1e-12, abs=0), it
        assert fc_group['lr'] == pytest.approx(5 * expected, rel=1e-12), it
        wrapper.step()
        sched.step()
    # Warmup really starts at s and meets the cosine at e = w.
    assert paddle_lr(0, s, base, w, E) == s
    assert paddle_lr(w - 1e-9, s, base, w, E) == pytest.approx(paddle_lr(w, s, base, w, E))


def test_chained_linear_warmup_would_be_off():
    """mmengine's LinearLR x CosineAnnealingLR product differs from Paddle in the warmup."""
    s, base, w, E = 5e-4, 1e-3, 5, 30
    e = 2.5
    chained = base * (s / base + (1 - s / base) * e / w) * (1 + math.cos(math.pi * e / E)) / 2
    assert abs(chained / paddle_lr(e, s, base, w, E) - 1) > 0.01


def test_max_epochs_defaults_to_end_and_state_round_trip():
    wrapper, sched = build(4, warmup_start_lr=5e-4, warmup_epochs=1, end=6)
    assert sched.max_epochs == 6 and sched.end == 24
    for _ in range(5):
        wrapper.step()
        sched.step()
    state = sched.state_dict()
    wrapper2, sched2 = build(4, warmup_start_lr=5e-4, warmup_epochs=1, end=6)
    sched2.load_state_dict(state)
    wrapper.step()
    wrapper2.step()
    sched.step()
    sched2.step()
    assert sched.get_last_value() == sched2.get_last_value()


def test_bad_configuration_is_reported():
    with pytest.raises(ValueError, match='warmup_epochs'):
        build(4, warmup_start_lr=5e-4, warmup_epochs=8, end=6)
    with pytest.raises(ValueError, match='epoch_length'):
        build(0, warmup_start_lr=5e-4, warmup_epochs=1, end=6)
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match='max_epochs'):
        PaddleWarmupCosineLR(opt, warmup_start_lr=0.01, warmup_epochs=1)
