"""suggest-fp32: the search logic on a known answer, and the whole loop on a model where
exactly two layers overflow in float16 on the CPU (Linear runs in float16 under CPU
autocast; its outputs reach ~1e5 > 65504, so they become inf)."""
import math
import re

import pytest
import torch
from torch import nn

from ovkit.accuracy.fix import fix_finding, keep_fp32, search_fp32, suggest_fp32

FP16_MAX = 65504.0


class Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class TwoOverflows(nn.Module):
    """``big1`` and ``big2`` produce values beyond the fp16 range, each scaled back down
    right after (so in float32 the model is well behaved)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(16, 32)
        self.act1 = nn.Tanh()
        self.big1 = nn.Linear(32, 32)
        self.down1 = Scale(1e-4)
        self.fc2 = nn.Linear(32, 32)
        self.act2 = nn.Tanh()
        self.big2 = nn.Linear(32, 32)
        self.down2 = Scale(1e-4)
        self.fc3 = nn.Linear(32, 32)
        self.act3 = nn.Tanh()
        self.head = nn.Linear(32, 4)
        with torch.no_grad():
            for big in (self.big1, self.big2):
                big.weight.mul_(4e5)
                big.bias.zero_()

    def forward(self, x):
        x = self.down1(self.big1(self.act1(self.fc1(x))))
        x = self.down2(self.big2(self.act2(self.fc2(x))))
        return self.head(self.act3(self.fc3(x)))


@pytest.fixture(scope='module')
def x():
    return torch.randn(8, 16, generator=torch.Generator().manual_seed(2))


def run(model, x, dtype=torch.float16):
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        return model(x).float()


def cosine(a, b):
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def test_the_model_overflows_exactly_twice(x):
    """The premise, checked by hand: big1/big2 exceed the fp16 range in float32 and give inf
    under autocast; no other layer comes near it."""
    m = TwoOverflows().eval()
    seen = {}
    hooks = [mod.register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, o))
             for n, mod in m.named_children()]
    with torch.no_grad():
        m(x)
        fp32_max = {n: float(o.abs().max()) for n, o in seen.items()}
        run(m, x)
    for h in hooks:
        h.remove()
    assert {n for n, v in fp32_max.items() if v > FP16_MAX} == {'big1', 'big2'}
    assert max(v for n, v in fp32_max.items() if n not in ('big1', 'big2')) < 100
    assert not torch.isfinite(run(m, x)).all()


def test_search_bisects_then_prunes():
    """A check that passes iff both 'm2' and 'm9' are kept: the prefix search stops at 10,
    pruning drops the other 8; 1 (none) + 1 (all) + 4 (bisection of 16) + 9 passes."""
    ranking = [f'm{i}' for i in range(16)]

    class Check:
        passes = 0

        def __call__(self, names):
            self.passes += 1
            return {'m2', 'm9'} <= set(names), 0.5

    check = Check()
    found = search_fp32(check, ranking)
    assert found['modules'] == ['m2', 'm9'] and found['ok']
    assert found['passes'] == 1 + 1 + 4 + 9 == len(found['trace'])
    # nothing to do / nothing helps
    assert search_fp32(type('C', (), {'passes': 0, '__call__': lambda s, n: (True, 1.0)})(),
                       ranking)['modules'] == []
    never = search_fp32(type('C', (), {'passes': 0, '__call__': lambda s, n: (False, 0.0)})(),
                        ranking)
    assert never['modules'] is None and len(never['trace']) == 2
    assert fix_finding(dict(never, ranking=ranking, metric='cosine_similarity', threshold=0.99,
                            forward_passes=5))['severity'] == 'error'


def test_suggest_fp32_returns_the_two_layers_and_its_snippet_works(x, tmp_path):
    model = TwoOverflows().eval()
    with torch.no_grad():
        reference = model(x)
    found = suggest_fp32(model, x, str(tmp_path), 'fp16')
    assert sorted(found['modules']) == ['big1', 'big2']
    assert sorted(found['ranking'][:2]) == ['big1', 'big2']  # own NaN/inf ranks first
    n = len(found['ranking'])
    assert found['passes'] <= 2 + math.ceil(math.log2(n)) + 1
    assert found['forward_passes'] == 3 + found['passes']
    finding = fix_finding(found)
    assert finding['modules'] == found['modules'] and 'big1' in finding['message']
    # the model is untouched afterwards: fp16 still overflows
    assert not torch.isfinite(run(model, x)).all()

    # the ovkit one-liner, as printed
    snippet = found['snippet']
    ns = {'model': model}
    exec(snippet, ns)
    fixed = run(model, x)
    assert torch.isfinite(fixed).all() and cosine(reference, fixed) > 0.99
    for name in ('big1', 'big2'):
        model.get_submodule(name).__dict__.pop('forward')

    # the plain-PyTorch variant, uncommented
    plain = snippet.split('# or in plain PyTorch')[1].split('\n', 1)[1]
    plain = re.sub(r'^# ?', '', plain, flags=re.M)
    head = snippet.split('# with ovkit installed')[0]
    fresh = TwoOverflows().eval()
    ns = {'model': fresh}
    exec(head + plain, ns)
    fixed = run(fresh, x)
    assert torch.isfinite(fixed).all() and cosine(reference, fixed) > 0.99


def test_keep_fp32_runs_the_module_in_float32(x):
    m = TwoOverflows().eval()
    seen = {}
    m.big1.register_forward_hook(lambda mod, i, o: seen.__setitem__('big1', (i[0].dtype,
                                                                            o.dtype)))
    with keep_fp32(m, ['big1']):
        out = run(m, x)
        # it receives fc1's float16 output and computes (and returns) float32
        assert seen['big1'] == (torch.float16, torch.float32)
        assert not torch.isfinite(out).all()  # big2 still overflows
    run(m, x)
    assert seen['big1'] == (torch.float16, torch.float16)  # undone
    from ovkit.accuracy.manifest import AccuracyError
    with pytest.raises(AccuracyError, match='no submodule'):
        keep_fp32(m, ['nope'])


def test_suggest_refuses_a_float32_setting(x, tmp_path):
    from ovkit.accuracy.manifest import AccuracyError
    with pytest.raises(AccuracyError, match='low-precision torch setting'):
        suggest_fp32(TwoOverflows(), x, str(tmp_path), 'fp32')
