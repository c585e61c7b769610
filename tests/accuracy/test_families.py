"""End to end on ovkit's own tiny configs of the other host families, each command run as a
user would in its own process (no registry scope can leak between the toolboxes), from a
working folder holding the shapes data (a few clips and images, written here):

* mmaction2: the tiny PP-TSM (``configs/pptsm/pptsm_tiny-r18_...``) on a shapes video, with
  one convolution made to overflow in float16 (its weights scaled up by 5e5, the BN after it
  scaled to match, so float32 is unchanged): ``suggest-fp32`` must name exactly that
  convolution in a few block-search passes, and its snippet applied to the model loaded
  afresh must make fp16 pass again.
* mmpretrain: the nano ViT (``configs/vit/vit-nano-p8_...``) on a shapes image:
  ``run --settings fp32,fp16 --isolate`` with its predictions dumped and the attribution.
"""
import csv
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

TOOL = os.path.join(REPO, 'tools', 'analysis', 'compare_accuracy.py')
PPTSM = os.path.join(REPO, 'configs', 'pptsm', 'pptsm_tiny-r18_2xb4-1x1x8-24e_shapes-video.py')
VIT = os.path.join(REPO, 'configs', 'vit', 'vit-nano-p8_40e_shapes-imagefolder.py')
PLANTED = 'backbone.layer1.0.conv1'  # its BN: backbone.layer1.0.bn1
ENV = dict(os.environ, PYTHONPATH=REPO)

# the PP-TSM model with seeded weights, PLANTED made to overflow in float16, saved as a
# checkpoint; prints the model's fp16 cosine before and after keep_fp32.py (when given)
PPTSM_SCRIPT = f'''
import sys, numpy as np, torch
from ovkit.accuracy.openmmlab import build_model, host_scope, make_forward, prepare_inputs
from ovkit.accuracy.capture import flatten_tensors
from ovkit.accuracy.metrics import stream_metrics
ckpt, video = sys.argv[1], sys.argv[2]
snippet = sys.argv[3] if len(sys.argv) > 3 else None
model, cfg = build_model({PPTSM!r}, None if snippet is None else ckpt)
if snippet is None:
    m = model.get_submodule({PLANTED!r})
    bn = model.get_submodule({PLANTED.replace('conv1', 'bn1')!r})
    with torch.no_grad():
        m.weight.mul_(5e5)  # |w| < 4.2e4: representable; its outputs (1.5e5) are not
        bn.running_mean.mul_(5e5)
        bn.running_var.mul_(2.5e11)
    torch.save(dict(state_dict=model.state_dict()), ckpt)
x, samples, _ = prepare_inputs(model, cfg, video)
fwd = make_forward(samples, 'predict')
def run(low):
    with host_scope(cfg), torch.no_grad(), torch.autocast('cpu', dtype=torch.float16,
                                                          enabled=low):
        return flatten_tensors(fwd(model, x))[1][1].float().numpy()  # pred_score
ref = run(False)
before = stream_metrics(ref, run(True))
print('planted' if snippet is None else 'fixed', np.isfinite(run(True)).all(),
      before['cosine_similarity'])
if snippet is not None:
    exec(open(snippet).read())
    print('after', stream_metrics(ref, run(True))['cosine_similarity'])
'''


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    from ovkit.shapes import make_shapes
    ws = tmp_path_factory.mktemp('families')
    make_shapes(str(ws / 'data' / 'shapes'), seed=0, kinds=['video', 'imagefolder'],
                options=dict(video=dict(per_class_train=1, per_class_val=1),
                             imagefolder=dict(per_class_train=1, per_class_val=1)))
    video = ws / 'data' / 'shapes' / 'video' / 'videos' / 'grow' / 'grow_val_000.avi'
    folder = ws / 'data' / 'shapes' / 'imagefolder' / 'val' / 'circle'
    return ws, str(video), str(folder / sorted(os.listdir(folder))[0])


def _start(ws, name, args):
    out = ws / name
    out.mkdir()
    log = open(out / 'log.txt', 'w')  # a file, not a pipe: a full pipe would block it
    return subprocess.Popen(args + ['--out', str(out), '--no-progress'], stdout=log,
                            stderr=subprocess.STDOUT, cwd=str(ws), env=ENV), out, log


def _wait(started):
    proc, out, log = started
    rc = proc.wait(timeout=900)
    log.close()
    text = (out / 'log.txt').read_text()
    assert rc == 0, text[-5000:]
    return out, text


@pytest.fixture(scope='module')
def runs(workspace):
    """The ViT run and the PP-TSM chain (plant, search) side by side, one per core."""
    ws, video, image = workspace
    vit = _start(ws, 'vit', [sys.executable, TOOL, 'run', VIT, '--input', image, '--settings',
                             'fp32,fp16', '--isolate'])
    ckpt = str(ws / 'planted.pth')
    planted = subprocess.run([sys.executable, '-c', PPTSM_SCRIPT, ckpt, video],
                             capture_output=True, text=True, timeout=600, cwd=str(ws), env=ENV)
    assert planted.returncode == 0, planted.stderr[-3000:]
    pptsm = _wait(_start(ws, 'pptsm', [sys.executable, TOOL, 'suggest-fp32', PPTSM, ckpt,
                                       '--input', video, '--setting', 'fp16']))
    return dict(vit=_wait(vit), pptsm=pptsm, planted=planted.stdout.split()[-3:],
                ws=ws, ckpt=ckpt, video=video)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_mmaction_pptsm_suggest_fp32_finds_the_planted_overflow(runs):
    # the plant works: float16 overflows to NaN/inf in the scores
    assert runs['planted'][:2] == ['planted', 'False']
    out, log = runs['pptsm']
    found = json.loads((out / 'suggest_fp32.json').read_text())
    assert found['modules'] == [PLANTED], found
    assert found['ranking'][0] == PLANTED  # its own error is a new inf: ranked first
    # a block search: far fewer passes than one per ranked module
    assert found['passes'] < len(found['ranking']) / 2 and not found['capped']
    assert found['forward_passes'] == 3 + found['passes']
    tried = [t['modules'] for t in found['trace']]
    assert tried[0] == [] and not found['trace'][0]['ok']
    assert ['backbone.layer1.0'] in tried or ['backbone.layer1'] in tried  # coarse to fine
    rows = read_csv(out / 'report' / 'compare.csv')
    row = next(r for r in rows if r['name'] == PLANTED)
    assert row['isolated_grade'] == 'error' and int(row['isolated_nonfinite_new_b']) > 0
    # the video went through the config's pipeline: 8 segments of 3 x 40 x 40
    assert next(r for r in rows if r['name'] == '__input__')['shape_a'] == '1x8x3x40x40'
    assert {r['path'] for r in rows if r['name'] == '__output__'} == {
        '[0].pred_label', '[0].pred_score'}  # --mode predict
    advice = json.loads((out / 'report' / 'advice.json').read_text())
    rules = [f['rule'] for f in advice['findings']]
    assert 'fp16_overflow' in rules and 'fp32_fix' in rules
    assert f"FP32_MODULES = [\n    '{PLANTED}',\n]" in log  # printed plainly: pasteable
    # the snippet, on the checkpoint loaded afresh: fp16 is finite and passes again
    proc = subprocess.run([sys.executable, '-c', PPTSM_SCRIPT, runs['ckpt'], runs['video'],
                           str(out / 'keep_fp32.py')], capture_output=True, text=True,
                          timeout=600, cwd=str(runs['ws']), env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    words = proc.stdout.split()
    assert words[-5:-3] == ['fixed', 'False'] and words[-2] == 'after'
    assert float(words[-1]) >= 0.99


def test_mmpretrain_vit_run_with_attribution(runs):
    out, log = runs['vit']
    report = out / 'report' / 'fp32_vs_fp16'
    rows = read_csv(report / 'compare.csv')
    by_name = {r['name']: r for r in rows}
    assert by_name['__input__']['shape_a'] == '1x3x32x32'  # the config's 32 px pipeline
    assert any(n.startswith('backbone.blocks.3.') for n in by_name)  # the 4-block nano ViT
    outputs = {r['path']: r for r in rows if r['name'] == '__output__'}
    assert set(outputs) == {'[0].pred_label', '[0].pred_score'}  # --mode predict
    assert outputs['[0].pred_score']['shape_a'] == '8'  # 8 classes read from the folder
    # attribution: every Linear rounds to fp16 itself; a GELU fed float32 adds nothing
    linears = [r for r in rows if r['module_type'] == 'Linear' and r['kind'] == 'output']
    assert linears and all(r['dtype_b'] == 'torch.float16' for r in linears)
    assert all(50 < float(r['isolated_sqnr_db']) < 100 for r in linears)
    gelus = [r for r in rows if r['module_type'] == 'GELU']
    assert gelus and all(float(r['isolated_max_absolute_error']) == 0 for r in gelus)
    assert any(float(r['max_absolute_error']) > 0 for r in gelus)  # inherited only
    advice = json.loads((report / 'advice.json').read_text())
    sources = next(f for f in advice['findings'] if f['rule'] == 'error_sources')
    assert sources['modules'] and all(m.startswith(('backbone', 'head'))
                                      for m in sources['modules'])
    assert (report / 'report.html').stat().st_size > 10000
    assert 'isolated' in log and 'module calls' in log  # the attribution's cost, printed
