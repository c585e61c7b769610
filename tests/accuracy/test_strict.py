"""Issue 8 on accuracy comparisons: a dump without the model's outputs fails --strict, and NaN
in a float32 run is reported as NaN, not as an fp16 overflow."""
import numpy as np

from ovkit.accuracy.advisor import advise, problem_row
from ovkit.accuracy.cli import main
from ovkit.accuracy.compare import compare_dumps
from ovkit.accuracy.manifest import save_arrays

RNG = np.random.default_rng(3)
LAYERS = ['__input__', 'stem', 'layer1', 'head', '__output__']


def _dumps(tmp_path, setting_b, edit):
    a = {name: RNG.standard_normal((4, 16)).astype(np.float32) for name in LAYERS}
    b = {k: v.copy() for k, v in a.items()}
    edit(b)
    save_arrays(tmp_path / 'a', a, setting='fp32')
    save_arrays(tmp_path / 'b', b, setting=setting_b)
    return str(tmp_path / 'a'), str(tmp_path / 'b')


def test_missing_model_outputs_fail_strict(tmp_path, capsys):
    a, b = _dumps(tmp_path, 'fp32', lambda b: b.pop('__output__'))
    advice = advise(compare_dumps(a, b, workers=1))
    assert [f['rule'] for f in advice['findings']] == ['missing_outputs']
    assert 'lacks 1 of the 1 model outputs' in advice['findings'][0]['message']
    argv = ['compare', a, b, '--out', str(tmp_path / 'r'), '--workers', '1', '--no-plots',
            '--no-html']
    assert main(argv + ['--strict']) == 3
    assert main(argv) == 0  # without --strict it reports and exits 0, as before


def test_nan_in_float32_is_nan_not_fp16_overflow(tmp_path):
    def nan(b):
        b['layer1'][0, 2] = np.nan
    a, b = _dumps(tmp_path, 'fp32-cuda', nan)
    result = compare_dumps(a, b, workers=1)
    advice = advise(result)
    rules = [f['rule'] for f in advice['findings']]
    assert rules[0] == 'non_finite' and 'fp16_overflow' not in rules
    f = advice['findings'][0]
    assert f['message'].startswith('1 tensor(s) are NaN/inf in fp32-cuda where A is finite; '
                                   'first at op 2 layer1[0]')
    assert 'no fp16 overflow' in f['advice']
    assert problem_row(result, advice)['name'] == 'layer1'
    # the same damage in a float16 run stays an fp16 overflow
    a16, b16 = _dumps(tmp_path / 'h', 'fp16', nan)
    assert advise(compare_dumps(a16, b16, workers=1))['findings'][0]['rule'] == 'fp16_overflow'
