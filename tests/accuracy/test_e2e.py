"""End to end on the shipped tiny detector (configs/shapes/faster_rcnn_tiny.py), random init.

The CLI ``run --isolate`` in a subprocess (fp32 vs bf16 and fp16: CSV, HTML, both PNGs,
advice, attribution), a dump in this process compared with the subprocess' one (seeded
weights and the dump order are reproducible across processes), ``dump --isolate`` against
that run's reference, and fp32 vs ONNX Runtime (with attribution) on the exported backbone +
neck.
"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO as ROOT

pytestmark = pytest.mark.e2e
CONFIG = os.path.join(ROOT, 'configs', 'shapes', 'faster_rcnn_tiny.py')
TOOL = os.path.join(ROOT, 'tools', 'analysis', 'compare_accuracy.py')


@pytest.fixture(scope='module')
def image(shapes_workspace):
    """A validation image of the shapes data (tests/conftest.py generates it once)."""
    val = shapes_workspace / 'data' / 'shapes' / 'coco' / 'val'
    return str(val / sorted(os.listdir(val))[0])


@pytest.fixture(scope='module', autouse=True)
def run_proc(image, tmp_path_factory):
    """Start the CLI run at once; the in-process tests below use the other core meanwhile."""
    out = tmp_path_factory.mktemp('run')
    log = open(out / 'stdout.txt', 'w')  # a file, not a pipe: a full pipe would block it
    proc = subprocess.Popen(
        [sys.executable, TOOL, 'run', CONFIG, '--input', image, '--settings', 'fp32,bf16,fp16',
         '--isolate', '--out', str(out), '--no-progress'], stdout=log, stderr=subprocess.STDOUT,
        cwd=ROOT)
    yield proc, out
    if proc.poll() is None:
        proc.kill()
    log.close()


@pytest.fixture(scope='module')
def run_out(run_proc):
    proc, out = run_proc
    rc = proc.wait(timeout=600)
    stdout = (out / 'stdout.txt').read_text()
    assert rc == 0, stdout[-5000:]
    return out, stdout


@pytest.fixture(scope='module')
def detector():
    from ovkit.accuracy.openmmlab import build_model
    return build_model(CONFIG, None)


def test_onnx_runtime_on_exported_backbone_and_neck(detector, image, tmp_path):
    from ovkit.accuracy.compare import compare_dumps
    from ovkit.accuracy.openmmlab import dump_config, prepare_inputs
    from ovkit.accuracy.report import write_report
    model, cfg = detector
    prepared = prepare_inputs(model, cfg, image)
    ref = dump_config(cfg, None, image, str(tmp_path / 'fp32'), 'fp32', mode='feat',
                      model=model, prepared=prepared, dump_inputs=True)
    ort = dump_config(cfg, None, image, str(tmp_path / 'onnx'), 'onnx', model=model,
                      prepared=prepared, isolate_from=ref.root)  # default mode: feat
    assert ort.meta['mode'] == 'feat'
    plain = [e.key for e in ort.entries if e.kind != 'isolated']
    assert plain == [e.key for e in ref.entries if e.kind != 'input']
    # every module call of backbone + neck cuts out of the graph and is isolated under ORT
    iso = ort.meta['isolation']
    calls = {(e.name, e.call) for e in ref.entries if e.kind == 'output'}
    assert iso['skipped'] == {} and iso['calls'] == len(calls) > 50
    assert any(e.name.startswith('neck.fpn_convs') for e in ort.entries)
    res = compare_dumps(ref.root, ort.root)
    assert res.isolated
    for r in res.rows:
        assert r['reason'] == '', (r['name'], r['reason'])
        assert r['cosine_similarity'] > 0.9999, r['name']
        if r['kind'] == 'output':
            assert r['isolated_cosine_similarity'] > 0.99999, r['name']
    paths = write_report(res, str(tmp_path / 'report'), quiet=True)
    assert paths['advice']['findings'][0]['rule'] == 'all_consistent'
    assert os.path.exists(paths['scatter']) and os.path.exists(paths['tensor_cdf'])


def test_onnx_predict_mode_is_refused(detector, image, tmp_path):
    from ovkit.accuracy.manifest import AccuracyError
    from ovkit.accuracy.openmmlab import dump_config
    model, cfg = detector
    with pytest.raises(AccuracyError, match='--mode tensor or --mode feat'):
        dump_config(cfg, None, image, str(tmp_path / 'o'), 'onnx', mode='predict', model=model)


def test_tensor_input_and_bad_inputs(detector, image, tmp_path):
    """A saved preprocessed tensor works as --input; bad files give clear messages."""
    import torch

    from ovkit.accuracy.manifest import AccuracyError
    from ovkit.accuracy.openmmlab import dump_config, prepare_inputs
    model, cfg = detector
    x, _, _ = prepare_inputs(model, cfg, image)
    np.save(tmp_path / 'x.npy', x.numpy())
    d = dump_config(cfg, None, str(tmp_path / 'x.npy'), str(tmp_path / 'd'), 'fp32',
                    model=model)
    assert d.meta['input']['kind'] == 'tensor'
    assert [e.kind for e in d.entries].count('model_output') == 3
    torch.save({'meta': 1}, tmp_path / 'bad.pt')
    with pytest.raises(AccuracyError, match='expected one tensor'):
        dump_config(cfg, None, str(tmp_path / 'bad.pt'), str(tmp_path / 'e'), model=model)
    with pytest.raises(AccuracyError, match='not found'):
        dump_config(cfg, None, str(tmp_path / 'none.png'), str(tmp_path / 'e'), model=model)
    (tmp_path / 'broken.png').write_bytes(b'not an image')
    with pytest.raises(AccuracyError, match='test pipeline .* failed on'):
        dump_config(cfg, None, str(tmp_path / 'broken.png'), str(tmp_path / 'e'), model=model)


@pytest.mark.parametrize('other', ['bf16', 'fp16'])
def test_run_writes_csv_plots_and_advice(run_out, detector, other):
    out, stdout = run_out
    report = out / 'report' / f'fp32_vs_{other}'
    files = os.listdir(report)
    assert 'compare.csv' in files and 'advice.json' in files
    assert 'scatter_cosine_similarity.png' in files and 'report.html' in files
    assert any(f.endswith('.cdf_abs.png') for f in files)
    assert any(f.endswith('_abs.csv') and f.startswith('tensor_') for f in files)
    for f in files:
        if f.endswith('.png'):
            assert (report / f).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    with open(report / 'compare.csv') as f:
        rows = list(csv.DictReader(f))
    names = [r['name'] for r in rows]
    assert names[0] == '__input__' and 'backbone.conv1' in names
    assert any(n.startswith('roi_head.') for n in names)
    assert names.count('__output__') == 3  # pred_instances bboxes, labels, scores
    assert float(rows[0]['cosine_similarity']) == 1.0  # same preprocessed input
    dtype_b = {r['name']: r['dtype_b'] for r in rows}
    assert dtype_b['backbone.conv1'] == f'torch.{"bfloat16" if other == "bf16" else "float16"}'
    # every compared number, computed a second way: numpy in float64 on the dumped files
    compared = [r for r in rows if not r['reason'] and r['shape_a'] == r['shape_b']
                and float(r['compared'] or 0) > 0]
    assert len(compared) > 80
    bad = set()
    for r in compared:
        a = np.load(r['file_a']).astype(np.float64).ravel()
        b = np.load(r['file_b']).astype(np.float64).ravel()
        ok = np.isfinite(a) & np.isfinite(b)
        a, b = a[ok], b[ok]
        na, nb, d = np.linalg.norm(a), np.linalg.norm(b), a - b
        cos = 1.0 if na == nb == 0 else 0.0 if na * nb == 0 else float(a @ b / (na * nb))
        assert float(r['cosine_similarity']) == pytest.approx(cos, abs=1e-9), r['name']
        assert float(r['max_absolute_error']) == pytest.approx(
            float(np.abs(d).max()) if d.size else 0.0, rel=1e-6, abs=1e-12), r['name']
        if d.any():
            sqnr = 10 * np.log10((a @ a) / (d @ d))
            assert float(r['sqnr_db']) == pytest.approx(sqnr, rel=1e-6), r['name']
        if cos < 0.99:
            bad.add(r['name'])
    convs = [r for r in compared if r['name'].startswith('backbone')
             and r['module_type'] == 'Conv2d']
    assert convs and all(float(r['max_absolute_error']) > 0 for r in convs)  # all round
    # the advisor's verdict follows from those numbers (default threshold: cosine 0.99)
    advice = json.loads((report / 'advice.json').read_text())
    assert advice['setting_a'] == 'fp32' and advice['setting_b'] == other
    rules = [f['rule'] for f in advice['findings']]
    outputs = [r for r in rows if r['name'] == '__output__']
    if all(r in compared for r in outputs):  # same number of detections on both sides
        expected = ('problem_node' if '__output__' in bad else
                    'single_point_deviation' if bad else 'all_consistent')
        assert expected in rules, (expected, rules, sorted(bad))
    else:
        assert 'problem_node' in rules  # the detections differ: the output is off
    # attribution, a second way: backbone.conv1 called by hand under autocast on the fp32
    # input the reference recorded gives the isolated file bit for bit
    import torch

    from ovkit.accuracy.manifest import load_dump
    ref, dump_b = load_dump(str(out / 'dumps' / 'fp32')), load_dump(str(out / 'dumps' / other))

    def entry(dump, kind):
        return np.load(dump.file_path(next(e for e in dump.entries
                                           if e.name == 'backbone.conv1' and e.kind == kind)))
    model = detector[0]  # seeded: the subprocess' weights
    dtype = torch.bfloat16 if other == 'bf16' else torch.float16
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        by_hand = model.backbone.conv1(torch.from_numpy(entry(ref, 'input'))).float().numpy()
    np.testing.assert_array_equal(entry(dump_b, 'isolated'), by_hand)
    a = entry(ref, 'output').astype(np.float64)
    conv1 = next(r for r in rows if r['name'] == 'backbone.conv1')
    assert float(conv1['isolated_relative_euclidean_distance']) == pytest.approx(
        np.linalg.norm(a - by_hand) / np.linalg.norm(a), rel=1e-6)
    # mmcv's CPU NMS/RoIAlign have no low-precision kernels: they ran in fp32, and say so
    assert any('nms' in w for w in advice['warnings'])
    # --isolate: every backbone conv has its own error; the ReLUs, fed float32, add none
    convs = [r for r in rows if r['name'].startswith('backbone') and r['module_type'] == 'Conv2d']
    assert convs and all(float(r['isolated_relative_euclidean_distance']) > 0 for r in convs)
    relus = [r for r in rows if r['module_type'] == 'ReLU']
    assert relus and all(float(r['isolated_max_absolute_error']) == 0 for r in relus)
    assert any(f['rule'] == 'error_sources' for f in advice['findings'])
    assert f'fp32 vs {other}' in stdout


def test_dumps_reproducible_across_processes(run_out, detector, image, tmp_path):
    """A dump made here matches the subprocess' fp32 dump bit for bit."""
    from ovkit.accuracy.compare import compare_dumps
    from ovkit.accuracy.openmmlab import dump_config
    model, cfg = detector
    mine = dump_config(cfg, None, image, str(tmp_path / 'fp32'), 'fp32', model=model)
    res = compare_dumps(str(run_out[0] / 'dumps' / 'fp32'), mine.root)  # A has inputs too
    assert len(res.rows) == len(mine.entries) > 80
    for r in res.rows:
        assert r['reason'] == '', (r['name'], r['reason'])
        assert r['max_absolute_error'] == 0.0, r['name']


def test_dump_cli_isolates_against_the_run_reference(run_out, image, tmp_path):
    """`dump --isolate REF` in this process against the reference the CLI run wrote."""
    from ovkit.accuracy.cli import main
    from ovkit.accuracy.manifest import load_dump
    ref = str(run_out[0] / 'dumps' / 'fp32')
    out = str(tmp_path / 'bf16')
    assert main(['dump', CONFIG, '--input', image, '--setting', 'bf16', '--isolate', ref,
                 '--out', out, '--no-progress']) == 0
    iso = load_dump(out).meta['isolation']
    calls = {(e.name, e.call) for e in load_dump(ref).entries if e.kind == 'output'}
    assert iso['calls'] == len(calls) - len(iso['skipped']) > 80


def test_suggest_fp32_finds_a_planted_overflow_in_the_detector(detector, image, tmp_path):
    """One mid-backbone conv of the detector made to overflow in float16 (weights scaled up
    to just below fp16's range, its BN scaled to match: float32 is unchanged): the block
    search names exactly that conv, in a few passes. Backbone + neck (``feat``): with random
    weights, the detections themselves differ under fp16 whatever is kept in float32."""
    import copy

    import torch

    from ovkit.accuracy.fix import suggest_fp32
    from ovkit.accuracy.openmmlab import host_scope, make_forward, prepare_inputs
    model, cfg = copy.deepcopy(detector[0]), detector[1]
    x, samples, _ = prepare_inputs(model, cfg, image)
    forward = make_forward(samples, 'feat')
    conv, bn = model.backbone.layer2[0].conv1, model.backbone.layer2[0].bn1
    peak = []
    hook = conv.register_forward_hook(lambda m, i, o: peak.append(float(o.abs().max())))
    with host_scope(cfg), torch.no_grad():
        before = forward(model, x)
    hook.remove()
    scale = 60000 / float(conv.weight.abs().max())  # every weight still fits in fp16
    assert scale * peak[0] > 2 * 65504  # but its outputs do not
    with torch.no_grad():
        conv.weight.mul_(scale)
        bn.running_mean.mul_(scale)
        bn.running_var.mul_(scale * scale)
        after = forward(model, x)
    assert torch.allclose(before[-1], after[-1], rtol=1e-4, atol=1e-5)  # fp32 unchanged
    with host_scope(cfg):
        found = suggest_fp32(model, x, str(tmp_path), 'fp16', forward=forward,
                             skip=('data_preprocessor',))
    assert found['modules'] == ['backbone.layer2.0.conv1'] and found['ok']
    assert found['ranking'][0] == 'backbone.layer2.0.conv1'  # a new inf of its own
    assert found['passes'] <= 8 < len(found['ranking'])
    assert [t['modules'] for t in found['trace']][:2] == [[], ['backbone']]
