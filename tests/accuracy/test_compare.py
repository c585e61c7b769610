"""Matching two dumps, per-row reasons, op ranges, parallel workers, CSV, bad input."""
import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from ovkit.accuracy import compare as compare_mod
from ovkit.accuracy.compare import compare_dumps, parse_op_range
from ovkit.accuracy.manifest import AccuracyError, load_dump, save_arrays
from ovkit.accuracy.metrics import register_metric, unregister_metric
from ovkit.accuracy.report import write_csv

RNG = np.random.default_rng(1)


def cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.fixture()
def pair(tmp_path):
    """Two dumps with every kind of row: matched, shape mismatch, empty, one side only."""
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    h1 = RNG.standard_normal((2, 16)).astype(np.float32)
    h2 = RNG.standard_normal((2, 4)).astype(np.float32)
    a = {'__input__': x, 'conv': h1, 'head': [h2, np.arange(6, dtype=np.int64)],
         'boxes': np.zeros((0, 4), np.float32), 'only_a': h2, '__output__': h2}
    b = {'__input__': x, 'conv': h1 + 1e-3, 'head': [h2 * 2, np.arange(6, dtype=np.int64)],
         'boxes': np.zeros((0, 4), np.float32), 'only_b': h2,
         '__output__': h2.reshape(4, 2)}
    save_arrays(tmp_path / 'a', a, setting='fp32')
    save_arrays(tmp_path / 'b', b, setting='bf16')
    return tmp_path / 'a', tmp_path / 'b', a, b


def by_name(result):
    return {(r['name'], r['index']): r for r in result.rows}


def test_rows_and_reasons(pair):
    da, db, a, b = pair
    res = compare_dumps(da, db)
    rows = by_name(res)
    assert [r['op_index'] for r in res.rows[:6]] == [0, 1, 2, 3, 4, 5]
    assert rows[('__input__', 0)]['cosine_similarity'] == 1.0
    assert rows[('conv', 0)]['cosine_similarity'] == pytest.approx(cos(a['conv'], b['conv']))
    assert rows[('conv', 0)]['max_absolute_error'] == pytest.approx(
        np.abs(a['conv'] - b['conv']).max(), rel=1e-6)
    assert rows[('head', 0)]['relative_euclidean_distance'] == pytest.approx(1.0)
    assert rows[('head', 1)]['max_absolute_error'] == 0  # int64 output compared too
    assert 'empty tensor' in rows[('boxes', 0)]['reason']
    assert math.isnan(rows[('boxes', 0)]['cosine_similarity'])
    assert 'only in A' in rows[('only_a', 0)]['reason']
    assert 'only in B' in rows[('only_b', 0)]['reason']
    assert rows[('only_b', 0)]['op_index'] is None
    assert 'shape mismatch (2, 4) vs (4, 2)' in rows[('__output__', 0)]['reason']


def test_op_range(pair):
    da, db, *_ = pair
    res = compare_dumps(da, db, op_range='1,4,2')
    assert [r['op_index'] for r in res.rows] == [1, 3]
    assert parse_op_range('5,,3') == (5, None, 3)
    assert parse_op_range('2') == (2, None, 1)
    with pytest.raises(AccuracyError, match='start,end,step'):
        parse_op_range('1,2,3,4')
    with pytest.raises(AccuracyError, match='integers'):
        parse_op_range('a,b')
    with pytest.raises(AccuracyError, match='selects no tensor'):
        compare_dumps(da, db, op_range='100,200')


def test_csv_columns_and_values(pair, tmp_path):
    da, db, a, b = pair
    res = compare_dumps(da, db)
    path = write_csv(res, tmp_path / 'out' / 'c.csv')
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for col in ('op_index', 'name', 'shape_a', 'shape_b', 'dtype_a', 'dtype_b',
                'cosine_similarity', 'relative_euclidean_distance', 'max_absolute_error',
                'mean_absolute_error', 'root_mean_square_error', 'max_relative_error',
                'mean_relative_error', 'accumulated_relative_error', 'kl_divergence',
                'mean_a', 'std_a', 'mean_b', 'std_b', 'overflow', 'reason'):
        assert col in rows[0], col
    conv = next(r for r in rows if r['name'] == 'conv')
    assert conv['shape_a'] == '2x16'
    assert float(conv['std_b']) == pytest.approx(np.std(b['conv'].astype(np.float64)), rel=1e-7)
    assert float(conv['rmse' if 'rmse' in conv else 'root_mean_square_error']) == pytest.approx(
        np.sqrt(np.mean((a['conv'].astype(np.float64) - b['conv']) ** 2)), rel=1e-6)


def test_parallel_equals_sequential_and_plugin_metrics(tmp_path, monkeypatch):
    arrays_a = {f'layer{i}': RNG.standard_normal(20000 + i).astype(np.float32) for i in range(6)}
    arrays_b = {k: v + RNG.standard_normal(v.shape).astype(np.float32) * 0.01
                for k, v in arrays_a.items()}
    save_arrays(tmp_path / 'a', arrays_a)
    save_arrays(tmp_path / 'b', arrays_b)

    @register_metric('test_median_abs_error')
    def median_abs(a, b):
        return float(np.median(np.abs(a - b)))

    try:
        seq = compare_dumps(tmp_path / 'a', tmp_path / 'b', workers=1, chunk=4096)
        monkeypatch.setattr(compare_mod, '_PARALLEL_MIN_BYTES', 0)
        par = compare_dumps(tmp_path / 'a', tmp_path / 'b', workers=2, chunk=4096)
    finally:
        unregister_metric('test_median_abs_error')
    assert par.stats['workers'] == 2 and seq.stats['workers'] == 1
    for rs, rp in zip(seq.rows, par.rows):
        assert rs['name'] == rp['name']
        assert rs['cosine_similarity'] == rp['cosine_similarity']
        assert rp['test_median_abs_error'] == pytest.approx(
            np.median(np.abs(arrays_a[rs['name']].astype(np.float64) - arrays_b[rs['name']])))
    assert 'test_median_abs_error' in par.columns


def test_overflow_flag(tmp_path):
    a = RNG.standard_normal(1000).astype(np.float32)
    a[5] = 70000.0
    with np.errstate(over='ignore'):
        b = a.astype(np.float16)  # 70000 -> inf in fp16
    save_arrays(tmp_path / 'a', {'x': a})
    save_arrays(tmp_path / 'b', {'x': b})
    row = compare_dumps(tmp_path / 'a', tmp_path / 'b').rows[0]
    assert row['overflow'] is True
    assert row['nonfinite_new_b'] == 1
    assert 'beyond the fp16 range' in row['reason'] and 'NaN/inf where A is finite' in row['reason']
    assert row['cosine_similarity'] > 0.999  # the other 999 elements agree


def test_manifest_less_dump_ordered_by_timestamp(tmp_path):
    d = tmp_path / 'raw'
    d.mkdir()
    x = np.ones(3, np.float32)
    np.save(d / 'backbone.conv1.0.1700000000000002.npy', x)
    np.save(d / '__input__.0.1700000000000001.npy', x)
    np.save(d / 'backbone.conv1.0.1700000000000005.npy', x * 2)  # second call
    np.save(d / 'backbone.relu.input.0.1700000000000003.npy', x)
    dump = load_dump(d)
    assert [e.label for e in dump.entries] == [
        '__input__[0]', 'backbone.conv1[0]', 'backbone.relu.input[0]', 'backbone.conv1#1[0]']
    assert dump.entries[0].kind == 'model_input'
    assert dump.entries[1].shape == [3]


# ------------------------------------------------------------------------------- bad input
def test_missing_directory(tmp_path):
    with pytest.raises(AccuracyError, match=r'does not exist.*compare_accuracy.py dump'):
        compare_dumps(tmp_path / 'nope', tmp_path / 'nope2')


def test_empty_dump(tmp_path):
    (tmp_path / 'empty').mkdir()
    save_arrays(tmp_path / 'ok', {'x': np.ones(2)})
    with pytest.raises(AccuracyError, match=r'empty \(no manifest.json, no .npy files\)'):
        compare_dumps(tmp_path / 'ok', tmp_path / 'empty')
    (tmp_path / 'file').write_text('x')
    with pytest.raises(AccuracyError, match='is a file, not a dump directory'):
        load_dump(tmp_path / 'file')


def test_manifest_without_tensors_and_broken_manifest(tmp_path):
    save_arrays(tmp_path / 'none', {})
    with pytest.raises(AccuracyError, match='lists no tensors'):
        load_dump(tmp_path / 'none')
    save_arrays(tmp_path / 'bad', {'x': np.ones(2)})
    (tmp_path / 'bad' / 'manifest.json').write_text('{"format": ')
    with pytest.raises(AccuracyError, match=r'manifest.json is not a valid.*delete manifest'):
        load_dump(tmp_path / 'bad')
    (tmp_path / 'bad' / 'manifest.json').write_text(json.dumps({'format': 'other'}))
    with pytest.raises(AccuracyError, match='not a valid ovkit dump manifest'):
        load_dump(tmp_path / 'bad')


def test_corrupt_and_missing_npy_are_rows(pair):
    da, db, *_ = pair
    dump_b = load_dump(db)
    conv = next(e for e in dump_b.entries if e.name == 'conv')
    with open(os.path.join(db, conv.file), 'wb') as f:
        f.write(b'\x93NUMPY garbage')
    head = next(e for e in dump_b.entries if e.name == 'head')
    os.remove(os.path.join(db, head.file))
    rows = by_name(compare_dumps(da, db))
    assert conv.file in rows[('conv', 0)]['reason']
    assert 'not a readable .npy file' in rows[('conv', 0)]['reason']
    assert 'missing' in rows[('head', 0)]['reason']
    assert rows[('__input__', 0)]['cosine_similarity'] == 1.0  # the rest still compared


def test_npy_that_is_not_numpy_has_clear_message(tmp_path):
    save_arrays(tmp_path / 'a', {'x': np.ones(4, np.float32)})
    save_arrays(tmp_path / 'b', {'x': np.ones(4, np.float32)})
    f = next(p for p in (tmp_path / 'b').iterdir() if p.suffix == '.npy')
    f.write_bytes(b'hello, this is text')
    row = compare_dumps(tmp_path / 'a', tmp_path / 'b').rows[0]
    assert f.name in row['reason'] and 're-run the dump' in row['reason']


def test_existing_dump_needs_overwrite(tmp_path):
    save_arrays(tmp_path / 'd', {'x': np.ones(2)})
    with pytest.raises(AccuracyError, match='--overwrite'):
        save_arrays(tmp_path / 'd', {'x': np.ones(2)})
    save_arrays(tmp_path / 'd', {'y': np.ones(2)}, overwrite=True)
    assert [e.name for e in load_dump(tmp_path / 'd').entries] == ['y']
    assert len([p for p in (tmp_path / 'd').iterdir() if p.suffix == '.npy']) == 1


def test_unknown_extra_metric(pair):
    da, db, *_ = pair
    with pytest.raises(AccuracyError, match='not registered'):
        compare_dumps(da, db, extra_metrics=['nope'])


def test_compare_path_imports_no_plotting_or_onnx(pair):
    """``import ovkit.accuracy`` and a whole comparison stay free of matplotlib and onnx."""
    da, db, *_ = pair
    code = ('import sys, ovkit.accuracy as acc; acc.compare_dumps(sys.argv[1], sys.argv[2]); '
            'print(sorted(m for m in ("matplotlib", "onnx", "onnxruntime") if m in sys.modules))')
    proc = subprocess.run([sys.executable, '-c', code, str(da), str(db)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == '[]'
