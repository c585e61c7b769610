"""The compare_accuracy.py command line in process (the script itself runs in test_e2e.py):
compare and its report files, options, bad input messages."""
import csv
import json
import os

import numpy as np
import pytest

from ovkit.accuracy.cli import main
from ovkit.accuracy.manifest import save_arrays

RNG = np.random.default_rng(3)


@pytest.fixture()
def dumps(tmp_path):
    names = ['__input__', 'conv1', 'conv2', 'fc', '__output__']
    a = {n: RNG.standard_normal((2, 64)).astype(np.float32) for n in names}
    b = {n: (v + RNG.standard_normal(v.shape) * 1e-4).astype(np.float32) for n, v in a.items()}
    b['__input__'] = a['__input__']
    for n in ('conv2', 'fc', '__output__'):  # diverges from conv2 on
        b[n] = RNG.standard_normal((2, 64)).astype(np.float32)
    save_arrays(tmp_path / 'fp32', a, setting='fp32')
    save_arrays(tmp_path / 'fp16', b, setting='fp16')
    return tmp_path


def test_compare_writes_report(dumps, capsys):
    out = dumps / 'report'
    rc = main(['compare', str(dumps / 'fp32'), str(dumps / 'fp16'), '--out', str(out),
               '--no-progress', '--top-n', '5'])
    assert rc == 0
    files = sorted(os.listdir(out))
    assert 'compare.csv' in files and 'advice.json' in files
    assert 'scatter_cosine_similarity.png' in files
    assert 'tensor_conv2_0_.top5_abs.csv' in files  # the problem node, chosen by default
    assert 'tensor_conv2_0_.cdf_abs.png' in files
    with open(out / 'compare.csv') as f:
        rows = list(csv.DictReader(f))
    assert [r['name'] for r in rows] == ['__input__', 'conv1', 'conv2', 'fc', '__output__']
    advice = json.loads((out / 'advice.json').read_text())
    assert advice['findings'][0]['rule'] == 'problem_node'
    assert advice['findings'][0]['node']['tensor'] == 'conv2[0]'
    with open(out / 'tensor_conv2_0_.top5_abs.csv') as f:
        top = list(csv.DictReader(f))
    a = np.load(dumps / 'fp32' / next(p for p in os.listdir(dumps / 'fp32') if 'conv2' in p))
    b = np.load(dumps / 'fp16' / next(p for p in os.listdir(dumps / 'fp16') if 'conv2' in p))
    err = np.abs(a.astype(np.float64) - b)
    assert float(top[0]['abs_error']) == pytest.approx(err.max())
    assert top[0]['index'] == 'x'.join(map(str, np.unravel_index(err.argmax(), err.shape)))
    printed = capsys.readouterr().out
    assert 'problem_node' in printed and 'conv2' in printed


def test_compare_options(dumps):
    out = dumps / 'r2'
    rc = main(['compare', str(dumps / 'fp32'), str(dumps / 'fp16'), '--out', str(out),
               '--no-progress', '--range', '0,2', '--metric', 'max_absolute_error',
               '--threshold', '0.1', '--tensor', 'conv1', '--error-by', 'rel', '--no-plots',
               '--strict'])
    assert rc == 3  # --strict: conv2 (op 2) is off -> error finding
    with open(out / 'compare.csv') as f:
        assert len(list(csv.DictReader(f))) == 3
    assert not any(p.endswith('.png') for p in os.listdir(out))
    assert os.path.exists(out / 'tensor_conv1_0_.top20_rel.csv')


@pytest.mark.parametrize('args,message', [
    (['compare', '{d}/empty', '{d}/fp16'], 'is empty'),
    (['compare', '{d}/fp32', '{d}/fp16', '--range', 'x'], '--range'),
    (['compare', '{d}/fp32', '{d}/fp16', '--tensor', 'nothing'], 'matches no tensor'),
])
def test_bad_input_messages(dumps, capsys, args, message):
    (dumps / 'empty').mkdir()
    args = [a.format(d=dumps) for a in args] + (['--out', str(dumps / 'r')]
                                                 if args[0] == 'compare' else [])
    assert main(args + ['--no-progress']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error:') and message in err


def test_compare_shows_isolated_and_propagated(tmp_path, capsys):
    import torch

    from ovkit.accuracy.dump import dump_module

    from .test_attribution import chain
    x = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    ref = dump_module(chain(), x, str(tmp_path / 'fp32'), 'fp32', dump_inputs=True)
    dump_module(chain(), x, str(tmp_path / 'bf16'), 'bf16', isolate_from=ref)
    out = tmp_path / 'report'
    assert main(['compare', ref.root, str(tmp_path / 'bf16'), '--out', str(out),
                 '--no-progress', '--no-plots', '--html-cdfs', '2']) == 0
    with open(out / 'compare.csv') as f:
        rows = list(csv.DictReader(f))
    fc1 = next(r for r in rows if r['name'] == 'fc1')
    assert float(fc1['isolated_sqnr_db']) > float(fc1['sqnr_db'])  # own < propagated error
    assert fc1['grade'] in ('pass', 'warn') and fc1['isolated_grade'] == 'pass'
    assert not any(r['kind'] in ('input', 'isolated') for r in rows)
    printed = capsys.readouterr().out
    assert 'own cos' in printed and 'error_sources' in printed
    assert (out / 'report.html').exists()


def test_log_lines_are_never_wrapped(dumps, capsys, monkeypatch):
    """Written to a file or a pipe (not a terminal), a long line stays one line: rich would
    otherwise wrap it at 80 columns, splitting paths and the words tests and users grep."""
    monkeypatch.delenv('COLUMNS', raising=False)
    out = dumps / ('a_report_folder_with_a_long_name_' * 4)
    assert main(['compare', str(dumps / 'fp32'), str(dumps / 'fp16'), '--out', str(out),
                 '--no-progress', '--no-plots']) == 0
    printed = capsys.readouterr().out
    assert len(str(out)) > 130
    assert (f'report written to {out}: compare.csv, advice.json, report.html, '
            'tensor_conv2_0_.top20_abs.csv\n') in printed


@pytest.mark.parametrize('args,message', [
    (['compare', 'A', 'B', '--metric', 'accuracy'], '--metric: unknown metric'),
    (['run', 'cfg.py', '--input', 'x.png', '--metric', 'cosine'], '--metric: unknown metric'),
    (['suggest-fp32', 'cfg.py', '--input', 'x.png', '--metric', 'accuracy'],
     '--metric: unknown metric'),
    (['suggest-fp32', 'cfg.py', '--input', 'x.png', '--metric', 'mean_a'],
     'cannot judge the search'),
    (['suggest-fp32', 'cfg.py', '--input', 'x.png', '--threshold', '1.5'],
     '--threshold: 1.5 is out of range for cosine_similarity'),
    (['compare', 'A', 'B', '--metric', 'error_ratio_5e-3', '--threshold', '5'],
     'out of range for error_ratio_5e-3'),
    (['compare', 'A', 'B', '--metric', 'max_absolute_error', '--threshold', '-1'],
     'out of range'),
    (['compare', 'A', 'B', '--threshold', 'nan'], 'out of range'),
    (['suggest-fp32', 'cfg.py', '--input', 'x.png', '--max-passes', '1'], 'at least 2 passes'),
    (['compare', 'A', 'B', '--metric-plugin', 'no_such_module_xyz'], 'cannot import'),
    (['compare', 'A', 'B', '--workers', '0'], '--workers: 0 must be at least 1'),
    (['run', 'cfg.py', '--input', 'x.png', '--settings', 'fp32,fp8'],
     "--settings: unknown setting 'fp8'; choose one of fp32, fp16"),
    (['run', 'cfg.py', '--input', 'x.png', '--settings', 'fp32'], 'give at least two'),
    (['run', 'cfg.py', '--input', 'x.png', '--settings', 'fp32,bf16,bfloat16'], 'twice'),
    (['dump', 'cfg.py', '--input', 'x.png', '--setting', 'int8'], "unknown setting 'int8'"),
    (['suggest-fp32', 'cfg.py', '--input', 'x.png', '--setting', 'onnx'],
     "'onnx' is not one: pass fp16, bf16"),
    (['dump', 'cfg.py', '--input', 'x.png', '--setting', 'onnx', '--mode', 'predict'],
     '--mode: predict cannot be exported to ONNX'),
])
def test_options_are_checked_before_any_work(tmp_path, capsys, args, message):
    """A wrong --metric, --threshold, --max-passes or setting, or flags that do not go
    together, are a usage error (status 2) at once: the config, input and dumps named are
    never opened (they do not even exist here)."""
    with pytest.raises(SystemExit) as e:
        main(args + ['--out', str(tmp_path / 'o')])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and 'usage:' in err
    assert [ln for ln in err.splitlines() if 'error:' in ln] == [err.splitlines()[-1]]
    assert not (tmp_path / 'o').exists()


@pytest.mark.parametrize('args,message', [
    (['compare', '{d}/nope', '{d}/fp16'], 'argument dir_a: {d}/nope does not exist; pass a '
                                          'folder written by'),
    (['compare', '{d}/fp32', '{d}/x.png'], 'argument dir_b: {d}/x.png is a file, not a dump'),
    (['dump', '{d}/missing.py', '--input', '{d}/x.png'],
     'argument config: {d}/missing.py does not exist; pass a config such as'),
    (['run', '{d}/cfg.py', 'w.pth', '--input', '{d}/x.png'],
     'argument checkpoint: w.pth does not exist; pass a .pth written by training, or omit'),
    (['suggest-fp32', '{d}/cfg.py', '--input', '{d}/none.png'],
     'argument --input: {d}/none.png does not exist; pass an image, a video or'),
    (['dump', '{d}/cfg.py', '--input', '{d}/x.png', '--setting', 'bf16', '--isolate', '{d}/r'],
     'argument --isolate: {d}/r does not exist; pass the reference dumped with --dump-inputs'),
    (['dump', '{d}/cfg.py', '--input', '{d}/x.png', '--include', '(conv'],
     "argument --include: '(conv' is not a valid regular expression"),
])
def test_bad_paths_name_the_argument_and_the_fix(dumps, capsys, args, message):
    (dumps / 'cfg.py').write_text('x = 1\n')
    (dumps / 'x.png').write_bytes(b'')
    with pytest.raises(SystemExit) as e:
        main([a.format(d=dumps) for a in args] + ['--out', str(dumps / 'o')])
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert message.format(d=dumps) in err[-1] and 'error:' in err[-1]
    assert not (dumps / 'o').exists()
