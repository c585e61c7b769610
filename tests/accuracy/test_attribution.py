"""Error attribution: each module of setting B run on the reference's recorded inputs.

The isolated error of a module is checked against a second, direct computation (the module
called by hand on the reference's input), and the split own / inherited on models whose
error source is known by construction.
"""
import copy
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from ovkit.accuracy.advisor import advise, own_error_ranking
from ovkit.accuracy.compare import compare_dumps
from ovkit.accuracy.dump import dump_module
from ovkit.accuracy.manifest import AccuracyError, load_dump

NAMES = ['fc0', 'act0', 'fc1', 'act1', 'fc2', 'act2', 'fc3', 'act3', 'head']


def chain(width=32, seed=0):
    torch.manual_seed(seed)
    layers = OrderedDict()
    for i in range(4):
        layers[f'fc{i}'] = nn.Linear(width, width)
        layers[f'act{i}'] = nn.Tanh()
    layers['head'] = nn.Linear(width, 8)
    return nn.Sequential(layers).eval()


@pytest.fixture(scope='module')
def x():
    return torch.randn(16, 32, generator=torch.Generator().manual_seed(1))


def red(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def outputs(result):
    return {r['name']: r for r in result.rows if r['kind'] == 'output'}


def recorded_input(dump, name):
    e = next(e for e in dump.entries if e.name == name and e.kind == 'input')
    return torch.from_numpy(np.load(dump.file_path(e)))


def test_lossy_layer_is_found_and_later_layers_only_inherit(x, tmp_path):
    """fc2's weights rounded in B, everything else exact: only fc2 has an own error, every
    later tensor carries it (propagated), and no later module adds any."""
    model = chain()
    lossy = copy.deepcopy(model)
    with torch.no_grad():
        lossy.fc2.weight.copy_(torch.round(lossy.fc2.weight * 8) / 8)
    ref = dump_module(model, x, str(tmp_path / 'a'), 'fp32', dump_inputs=True)
    b = dump_module(lossy, x, str(tmp_path / 'b'), 'fp32', isolate_from=ref)
    assert b.meta['isolation']['calls'] == len(NAMES)  # one extra call per module
    assert b.meta['isolation']['skipped'] == {}
    res = compare_dumps(ref.root, b.root, workers=1)
    assert res.isolated
    rows = outputs(res)
    # second computation of fc2's own error: the module by hand on A's recorded input
    with torch.no_grad():
        x2 = recorded_input(ref, 'fc2')
        direct = red(model.fc2(x2), lossy.fc2(x2))
    assert rows['fc2']['isolated_relative_euclidean_distance'] == pytest.approx(direct, rel=1e-6)
    assert direct > 0.01
    for name in NAMES[:4]:  # before the lossy layer: nothing at all
        assert rows[name]['max_absolute_error'] == 0.0
        assert rows[name]['isolated_max_absolute_error'] == 0.0
    for name in NAMES[5:]:  # after it: inherited error only
        assert rows[name]['relative_euclidean_distance'] > 1e-3, name
        assert rows[name]['isolated_max_absolute_error'] == 0.0, name
        assert rows[name]['isolated_cosine_similarity'] == 1.0, name
    assert [r['name'] for r in own_error_ranking(res.rows)] == ['fc2']
    advice = advise(res, threshold=0.99999)
    src = next(f for f in advice['findings'] if f['rule'] == 'error_sources')
    assert src['modules'] == ['fc2'] and src['severity'] == 'error'


def test_attribution_costs_one_extra_call_per_module_and_maps_the_inputs(x, tmp_path,
                                                                        monkeypatch):
    """With isolate_from every leaf runs exactly twice (one extra forward pass, no more);
    the recorded inputs are memory-mapped from the reference's files, not read into copies,
    and an in-place module fed them leaves those files untouched."""
    from ovkit.accuracy import dump as dump_mod
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(inplace=True), nn.Linear(32, 8)).eval()
    calls = {}
    for n, m in model.named_children():
        m.register_forward_pre_hook(lambda *_, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
    ref = dump_module(model, x, str(tmp_path / 'a'), 'fp32', dump_inputs=True)
    assert calls == {'0': 1, '1': 1, '2': 1}
    files = {e.file: open(ref.file_path(e), 'rb').read() for e in ref.entries}
    mapped = []
    load = dump_mod.Isolator._load

    def spy(self, entry):
        t = load(self, entry)
        with open('/proc/self/maps') as f:  # the file is mapped while the tensor lives
            mapped.append(self.ref.file_path(entry) in f.read())
        return t

    monkeypatch.setattr(dump_mod.Isolator, '_load', spy)
    calls.clear()
    b = dump_module(model, x, str(tmp_path / 'b'), 'bf16', isolate_from=ref)
    assert calls == {'0': 2, '1': 2, '2': 2}
    assert b.meta['isolation']['calls'] == 3 and mapped == [True] * 3
    assert {e.file: open(ref.file_path(e), 'rb').read() for e in ref.entries} == files
    relu = next(e for e in b.entries if e.name == '1' and e.kind == 'isolated')
    np.testing.assert_array_equal(np.load(b.file_path(relu)),
                                  np.maximum(recorded_input(ref, '1').numpy(), 0))


@pytest.mark.parametrize('setting,dtype', [('fp16', torch.float16), ('bf16', torch.bfloat16)])
def test_autocast_isolation_matches_a_direct_autocast_call(x, tmp_path, setting, dtype):
    """Under CPU autocast: a Linear's own error is its low-precision matmul, equal to calling
    it by hand under autocast on A's input; Tanh fed A's float32 input adds nothing of its
    own although its propagated error is not zero."""
    model = chain()
    ref = dump_module(model, x, str(tmp_path / 'a'), 'fp32', dump_inputs=True)
    b = dump_module(model, x, str(tmp_path / setting), setting, isolate_from=ref)
    res = compare_dumps(ref.root, b.root, workers=1)
    rows = outputs(res)
    x1 = recorded_input(ref, 'fc1')
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        by_hand = model.fc1(x1)
    iso = next(e for e in b.entries if e.name == 'fc1' and e.kind == 'isolated')
    assert iso.dtype == str(dtype)
    np.testing.assert_array_equal(np.load(b.file_path(iso)), by_hand.float().numpy())
    for i in range(4):
        assert rows[f'fc{i}']['isolated_relative_euclidean_distance'] > 0
        assert rows[f'act{i}']['isolated_max_absolute_error'] == 0.0  # ran in float32
        assert rows[f'act{i}']['relative_euclidean_distance'] > 0  # inherited
    # one rounding of the output (fp16: 11 bits, bf16: 8 bits) bounds the own SQNR from below
    own = [rows[f'fc{i}']['isolated_sqnr_db'] for i in range(4)]
    assert min(own) > (55 if setting == 'fp16' else 38), own
    # the propagated error grows along the chain, the own error does not
    assert rows['head']['sqnr_db'] < min(own)
    ranked = [r['name'] for r in own_error_ranking(res.rows)]
    assert set(ranked) == {'fc0', 'fc1', 'fc2', 'fc3', 'head'}


def test_module_called_twice_and_kwargs(tmp_path):
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Linear(8, 8)
            self.scale = Scale()

        def forward(self, x):
            return self.scale(self.block(self.block(x)), factor=torch.tensor(3.0))

    class Scale(nn.Module):
        def forward(self, x, factor=None):
            return x * factor

    torch.manual_seed(0)
    m = Twice().eval()
    x = torch.randn(4, 8)
    ref = dump_module(m, x, str(tmp_path / 'a'), 'fp32', dump_inputs=True)
    b = dump_module(m, x, str(tmp_path / 'b'), 'fp16', isolate_from=ref)
    isolated = [(e.name, e.call) for e in b.entries if e.kind == 'isolated']
    assert isolated == [('block', 0), ('block', 1), ('scale', 0)]
    rows = compare_dumps(ref.root, b.root, workers=1).rows
    second = next(r for r in rows if r['name'] == 'block' and r['call'] == 1)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.float16):
        e = next(e for e in ref.entries if e.name == 'block' and e.call == 1 and e.kind == 'input')
        xin = torch.from_numpy(np.load(ref.file_path(e)))
        e_out = next(e for e in ref.entries if e.key == ('block', 'output', 1, 0))
        direct = red(np.load(ref.file_path(e_out)), m.block(xin).float())
    assert second['isolated_relative_euclidean_distance'] == pytest.approx(direct, rel=1e-6)


def test_what_cannot_be_isolated_is_said(x, tmp_path):
    model = chain()
    plain = dump_module(model, x, str(tmp_path / 'plain'), 'fp32')
    with pytest.raises(AccuracyError, match='--dump-inputs'):
        dump_module(model, x, str(tmp_path / 'b'), 'fp16', isolate_from=plain)
    # reference recorded on another input shape: every call is skipped, with the reason
    ref = dump_module(model, x[:4], str(tmp_path / 'a'), 'fp32', dump_inputs=True)
    b = dump_module(model, x, str(tmp_path / 'c'), 'fp16', isolate_from=ref.root)
    skipped = b.meta['isolation']['skipped']
    assert set(skipped) == set(NAMES) and 'shape (16, 32) here, (4, 32)' in skipped['fc0']
    res = compare_dumps(ref.root, b.root, workers=1)
    assert any('could not be isolated' in w for w in res.stats['warnings'])
    assert not res.isolated


def test_isolated_files_survive_a_manifest_less_read(x, tmp_path):
    """The isolated kind is part of the file naming: a dump without manifest keeps it."""
    import os
    model = chain()
    ref = dump_module(model, x, str(tmp_path / 'a'), 'fp32', dump_inputs=True)
    b = dump_module(model, x, str(tmp_path / 'b'), 'bf16', isolate_from=ref)
    os.remove(os.path.join(b.root, 'manifest.json'))
    again = load_dump(b.root)
    assert sum(e.kind == 'isolated' for e in again.entries) == len(NAMES)
    assert sum(e.kind == 'input' for e in again.entries) == 0


def test_onnx_isolation_cuts_single_module_subgraphs(x, tmp_path):
    pytest.importorskip('onnxruntime')
    model = chain()
    ref = dump_module(model, x, str(tmp_path / 'a'), 'fp32', dump_inputs=True)
    b = dump_module(model, x, str(tmp_path / 'onnx'), 'onnx', isolate_from=ref)
    iso = b.meta['isolation']
    res = compare_dumps(ref.root, b.root, workers=1)
    rows = outputs(res)
    cut = {e.name for e in b.entries if e.kind == 'isolated'}
    assert cut | set(iso['skipped']) == set(NAMES)
    assert {'fc0', 'fc1', 'head'} <= cut  # a Linear exports to one Gemm/MatMul+Add group
    for name in cut:
        assert rows[name]['isolated_cosine_similarity'] > 0.999999, name
        assert math.isfinite(rows[name]['isolated_max_absolute_error'])
    for name, reason in iso['skipped'].items():
        assert reason, name


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA GPU on this machine')
def test_cuda_fp16_isolation(x, tmp_path):  # pragma: no cover - needs a GPU
    model = chain()
    ref = dump_module(model, x, str(tmp_path / 'a'), 'fp32', dump_inputs=True)
    b = dump_module(model, x, str(tmp_path / 'b'), 'cuda-fp16', isolate_from=ref)
    rows = outputs(compare_dumps(ref.root, b.root, workers=1))
    assert rows['fc1']['isolated_relative_euclidean_distance'] > 0
    assert rows['act1']['isolated_max_absolute_error'] < 1e-6
