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


def test_search_bisects_then_prunes_by_halves():
    """A check that passes iff both 'm2' and 'm9' are kept: the prefix search stops at 10,
    pruning by halves drops the other 8 in 4 passes (one at a time took 9); 1 (none) + 4
    (bisection of 16) + 4, no set tried twice."""
    ranking = [f'm{i}' for i in range(16)]

    class Check:
        passes = 0

        def __call__(self, names):
            self.passes += 1
            return {'m2', 'm9'} <= set(names), 0.5

    check = Check()
    found = search_fp32(check, ranking)
    assert found['modules'] == ['m2', 'm9'] and found['ok'] and not found['capped']
    # by hand: none; prefixes 8 (fails), 12, 10 (pass), 9 (fails); then without m0-m8 but m9
    # (fails), without m4-m8 (passes), without m2-m8 (fails), m3 dropped, m0-m1 dropped
    assert [len(t['modules']) for t in found['trace']] == [0, 8, 12, 10, 9, 1, 5, 3, 4, 2]
    assert found['passes'] == 10 == len({frozenset(t['modules']) for t in found['trace']})
    # nothing to do / nothing helps
    assert search_fp32(type('C', (), {'passes': 0, '__call__': lambda s, n: (True, 1.0)})(),
                       ranking)['modules'] == []
    never = search_fp32(type('C', (), {'passes': 0, '__call__': lambda s, n: (False, 0.0)})(),
                        ranking)
    assert never['modules'] is None and len(never['trace']) == 1 + 4 + 1
    assert fix_finding(dict(never, ranking=ranking, metric='cosine_similarity', threshold=0.99,
                            forward_passes=5))['severity'] == 'error'


# 4 stages x 2 blocks x 2 convs, named as a ResNet's modules are
LEAVES = [f's{s}.b{b}.conv{c}' for s in range(1, 5) for b in range(2) for c in (1, 2)]


class Covers:
    """Passes iff every module of ``need`` runs in float32: it, or a block above it, is kept
    (keep_fp32 on a block runs all of it in float32); ``own_code`` blocks pass only whole."""

    def __init__(self, need, own_code=(), called=None):
        self.need, self.own_code, self.called, self.passes = need, own_code, called, 0

    def __call__(self, names):
        self.passes += 1
        if self.called is not None:
            assert all(n in self.called or n in LEAVES for n in names), names

        def kept(m):
            return any(m == n or m.startswith(n + '.') for n in names)
        return all(kept(m) for m in self.need) and all(
            any(b == n or b.startswith(n + '.') for n in names) for b in self.own_code), 0.5


def test_block_search_finds_the_modules_coarse_to_fine():
    """Stages, then blocks, then convolutions: the two culprits are found although four
    decoys of stage 1 have the largest own errors; the trace goes down the tree."""
    ranking = ['s1.b0.conv1', 's1.b1.conv2'] + [n for n in LEAVES if n not in (
        's1.b0.conv1', 's1.b1.conv2')]
    energy = dict({n: 1.0 for n in LEAVES}, **{'s1.b0.conv1': 2.0, 's1.b1.conv2': 1.9})
    check = Covers(['s2.b1.conv2', 's4.b0.conv1'])
    found = search_fp32(check, ranking, energy)
    assert found['modules'] == ['s2.b1.conv2', 's4.b0.conv1'] and not found['capped']
    tried = [t['modules'] for t in found['trace']]
    assert tried[1] == ['s1', 's2']  # stages by energy: s1 (5.9) first, then s2, s3, s4
    assert ['s4', 's2'] in tried and ['s2.b1', 's4.b0'] in tried
    # by hand: none; 3 prefixes; 4 to prune the stages; 3 + 1 + 2 + 2 down the blocks
    assert found['passes'] == 16 == len({frozenset(t) for t in tried})
    assert all(t['ok'] == check(t['modules'])[0] for t in found['trace'])


def test_block_search_keeps_a_block_whose_own_code_needs_float32():
    """A block whose forward (code between its modules) must run in float32 stays whole."""
    check = Covers(['s3.b0.conv2'], own_code=['s3.b1'])
    found = search_fp32(check, LEAVES)
    assert found['modules'] == ['s3.b0.conv2', 's3.b1']


def test_block_search_uses_only_called_blocks():
    """Blocks the forward enters through another method (mmdet's roi_head.predict) cannot be
    kept in float32 by replacing their forward: only called ones are tried."""
    called = {n for leaf in LEAVES for n in (leaf.split('.')[0], leaf.rsplit('.', 1)[0])
              if n != 's3'}
    check = Covers(['s3.b1.conv1'], called=called)
    found = search_fp32(check, LEAVES)
    assert found['modules'] == ['s3.b1.conv1']
    assert not any('s3' in t['modules'] for t in found['trace'])
    assert found['trace'][-1]['modules'] == ['s3.b1.conv1']


class ViaMethod(nn.Module):
    """``head`` is entered through ``predict``, not ``head(...)`` (as mmdet's roi_head)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 16), nn.Tanh())
        self.head = nn.Module()
        self.head.fc = nn.Linear(16, 4)
        self.head.predict = lambda x: self.head.fc(x) * 2

    def forward(self, x):
        return self.head.predict(self.body(x))


def test_output_check_records_the_modules_the_forward_calls(x, tmp_path):
    from ovkit.accuracy.dump import dump_module
    from ovkit.accuracy.fix import OutputCheck
    model = ViaMethod().eval()
    ref = dump_module(model, x, str(tmp_path / 'ref'), 'fp32')
    check = OutputCheck(model, x, ref, 'fp16')
    ok, worst = check([])
    assert check.called == {'body', 'body.0', 'body.1', 'head.fc'} and check.passes == 1
    assert ok and 0.99 < worst < 1  # fp16 rounding: close, not equal
    assert check(['body', 'head.fc']) == (True, pytest.approx(1.0, abs=1e-12))
    assert not any(h for m in model.modules() for h in m._forward_pre_hooks.values())


def test_search_cap_returns_the_smallest_passing_set_found():
    """At the cap the search stops with the passing set that keeps the fewest modules in
    float32 so far, and says it was capped; with no passing set yet, it returns None."""
    check = Covers(['s2.b1.conv2', 's4.b0.conv1'])
    found = search_fp32(check, LEAVES, max_passes=9)
    assert found['capped'] and found['passes'] == 9
    assert check(found['modules'])[0]
    passing = [t['modules'] for t in found['trace'] if t['ok']]
    assert found['modules'] in passing and len(passing) > 1
    size = {tuple(p): sum(any(m == n or m.startswith(n + '.') for n in p) for m in LEAVES)
            for p in passing}
    assert size[tuple(found['modules'])] == min(size.values()) < 16
    finding = fix_finding(dict(found, ranking=LEAVES, metric='cosine_similarity',
                               threshold=0.99, max_passes=9, forward_passes=12,
                               snippet='x'))
    assert 'cap of 9 passes' in finding['message']
    early = search_fp32(Covers(['s4.b1.conv2']), LEAVES, max_passes=2)
    assert early['modules'] is None and early['capped']
    assert 'within 2 search passes' in fix_finding(dict(
        early, ranking=LEAVES, metric='cosine_similarity', threshold=0.99, max_passes=2,
        forward_passes=5))['message']


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
