"""Advisor rules on constructed dumps: each rule triggered on purpose, and none."""
import json

import numpy as np
import pytest

from ovkit.accuracy.advisor import advise, problem_row, save_advice
from ovkit.accuracy.compare import compare_dumps
from ovkit.accuracy.manifest import save_arrays

RNG = np.random.default_rng(7)
LAYERS = ['__input__', 'stem', 'layer1', 'layer2', 'layer3', 'head', '__output__']


def chain():
    return {name: RNG.standard_normal((4, 32)).astype(np.float32) for name in LAYERS}


def tiny_noise(x):
    return (x + RNG.standard_normal(x.shape).astype(np.float32) * 1e-4).astype(np.float32)


def garbage(x):
    return RNG.standard_normal(x.shape).astype(np.float32)  # cosine ~ 0


def run(tmp_path, a, b, **kw):
    save_arrays(tmp_path / 'a', a, setting='fp32')
    save_arrays(tmp_path / 'b', b, setting='fp16')
    result = compare_dumps(tmp_path / 'a', tmp_path / 'b')
    return result, advise(result, **kw)


def rules(advice):
    return [f['rule'] for f in advice['findings']]


def test_all_consistent_triggers_nothing(tmp_path):
    a = chain()
    b = {k: tiny_noise(v) for k, v in a.items()}
    b['__input__'] = a['__input__'].copy()
    result, advice = run(tmp_path, a, b)
    assert rules(advice) == ['all_consistent']
    assert advice['findings'][0]['severity'] == 'info'
    assert problem_row(result, advice) is None


def test_single_point_deviation(tmp_path):
    a = chain()
    b = {k: tiny_noise(v) for k, v in a.items()}
    b['layer2'] = garbage(a['layer2'])
    result, advice = run(tmp_path, a, b)
    assert rules(advice) == ['single_point_deviation']
    f = advice['findings'][0]
    assert f['count'] == 1 and f['tensors'][0]['tensor'] == 'layer2[0]'
    assert problem_row(result, advice)['name'] == 'layer2'


def test_problem_node_is_start_of_bad_tail(tmp_path):
    a = chain()
    b = {k: tiny_noise(v) for k, v in a.items()}
    b['stem'] = garbage(a['stem'])  # isolated deviation, recovers at layer1
    for k in ('layer2', 'layer3', 'head', '__output__'):
        b[k] = garbage(a[k])
    result, advice = run(tmp_path, a, b)
    assert rules(advice) == ['problem_node']
    f = advice['findings'][0]
    assert f['node']['tensor'] == 'layer2[0]' and f['node']['op_index'] == 3
    assert f['first_deviation']['tensor'] == 'stem[0]'
    assert 'torch.autocast' in f['advice']  # fp16 setting -> precision advice
    assert problem_row(result, advice)['name'] == 'layer2'


def test_problem_node_when_only_output_is_bad(tmp_path):
    a = chain()
    b = {k: tiny_noise(v) for k, v in a.items()}
    b['__output__'] = garbage(a['__output__'])  # e.g. post-processing outside modules
    _, advice = run(tmp_path, a, b)
    assert rules(advice) == ['problem_node']
    assert advice['findings'][0]['node']['tensor'] == '__output__[0]'


def test_output_shape_mismatch_counts_as_bad_output(tmp_path):
    a = chain()
    b = {k: tiny_noise(v) for k, v in a.items()}
    b['head'] = garbage(a['head'])
    b['__output__'] = np.ones((3, 32), np.float32)  # e.g. a different number of detections
    _, advice = run(tmp_path, a, b)
    assert rules(advice) == ['problem_node']
    assert advice['findings'][0]['node']['tensor'] == 'head[0]'


def test_fp16_overflow(tmp_path):
    a = chain()
    b = {k: tiny_noise(v) for k, v in a.items()}
    b['layer1'] = b['layer1'].copy()
    b['layer1'][0, :3] = [np.inf, np.nan, -np.inf]
    result, advice = run(tmp_path, a, b)
    assert rules(advice)[0] == 'fp16_overflow'
    f = advice['findings'][0]
    assert f['count'] == 1 and f['first']['tensor'] == 'layer1[0]'
    assert '3 NaN/inf' in f['message']
    assert problem_row(result, advice)['name'] == 'layer1'


def test_fp16_range_overflow_without_inf_in_b(tmp_path):
    a = chain()
    a['layer3'] = a['layer3'] * 1e5  # beyond 65504 in the reference
    b = {k: tiny_noise(v) for k, v in a.items()}
    b['layer3'] = np.clip(a['layer3'], -65504, 65504).astype(np.float16)
    _, advice = run(tmp_path, a, b)
    assert 'fp16_overflow' in rules(advice)
    assert 'beyond the fp16 range' in advice['findings'][0]['message']
    # the range is a flag: raised above the data, the rule no longer fires
    relaxed = compare_dumps(tmp_path / 'a', tmp_path / 'b', fp16_max=1e9)
    assert 'fp16_overflow' not in rules(advise(relaxed, fp16_max=1e9))


def test_input_inconsistency(tmp_path):
    a = chain()
    b = {k: tiny_noise(v) for k, v in a.items()}
    b['__input__'] = garbage(a['__input__'])
    _, advice = run(tmp_path, a, b)
    assert rules(advice)[0] == 'input_inconsistency'
    assert 'same file' in advice['findings'][0]['advice']


def test_thresholds_are_arguments(tmp_path):
    a = chain()
    b = {k: (v + RNG.standard_normal(v.shape).astype(np.float32) * 0.05).astype(np.float32)
         for k, v in a.items()}
    b['__input__'] = a['__input__'].copy()
    result, advice = run(tmp_path, a, b)
    assert rules(advice) == ['all_consistent']  # cosine ~0.9988 > 0.99
    strict = advise(result, threshold=0.9999)
    assert rules(strict) == ['problem_node']
    by_error = advise(result, metric='max_absolute_error', threshold=1e-6)
    assert rules(by_error) == ['problem_node']
    assert by_error['findings'][0]['node']['tensor'] == 'stem[0]'


def test_advice_json_round_trip(tmp_path):
    a = chain()
    b = {k: tiny_noise(v) for k, v in a.items()}
    b['layer2'] = garbage(a['layer2'])
    _, advice = run(tmp_path, a, b)
    path = save_advice(advice, tmp_path / 'advice.json')
    loaded = json.loads(open(path).read())
    assert loaded['findings'][0]['rule'] == 'single_point_deviation'
    assert loaded['threshold'] == 0.99 and loaded['setting_b'] == 'fp16'


def test_unknown_metric(tmp_path):
    a = chain()
    result, _ = run(tmp_path, a, a)
    from ovkit.accuracy.manifest import AccuracyError
    with pytest.raises(AccuracyError, match='unknown metric'):
        advise(result, metric='accuracy')


def test_problem_node_on_a_module_input_points_upstream(tmp_path):
    """A module input (dumped with dump_inputs) that is the first bad tensor: the cause is
    the code before the module, and the advice says so."""
    from ovkit.accuracy.manifest import DumpWriter

    def write(root, arrays):
        w = DumpWriter(str(root))
        for name, kind, arr in arrays:
            w.add(name, arr, kind=kind)
        w.close(setting=dict(name=root.name))

    x, feat, rois, out = (RNG.standard_normal((8, 16)).astype(np.float32) for _ in range(4))
    write(tmp_path / 'fp32', [('__input__', 'model_input', x), ('conv', 'output', feat),
                              ('roi', 'input', rois), ('roi', 'output', out),
                              ('__output__', 'model_output', out)])
    write(tmp_path / 'bf16', [('__input__', 'model_input', x), ('conv', 'output', feat),
                              ('roi', 'input', garbage(rois)), ('roi', 'output', garbage(out)),
                              ('__output__', 'model_output', garbage(out))])
    advice = advise(compare_dumps(tmp_path / 'fp32', tmp_path / 'bf16'))
    f = advice['findings'][0]
    assert f['rule'] == 'problem_node' and f['node']['tensor'] == 'roi.input[0]'
    assert 'code between modules' in f['advice']
