"""End to end from an mmaction2 config with a video and an mmpretrain config with an image:
the host toolboxes' own configs (``mmaction::`` / ``mmpretrain::``), made tiny with
``--cfg-options`` (random weights, ResNet-18, small frames), each run as a user would in its
own process (no registry scope can leak between the toolboxes).

* mmaction2 TSM (ResNet-18 with temporal shift), an 8-frame synthetic video decoded by the
  config's own pipeline: ``run --settings fp32,fp16 --isolate``; predictions dumped.
* mmpretrain ResNet-18, a synthetic image: ``suggest-fp32`` at a tight threshold, so that the
  search has something to find; its snippet applied to a freshly built model must pass.
"""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

TOOL = os.path.join(REPO, 'tools', 'analysis', 'compare_accuracy.py')
TSM = 'mmaction::recognition/tsm/tsm_imagenet-pretrained-r50_8xb16-1x1x8-50e_kinetics400-rgb.py'
TSM_OPTIONS = [
    'model.backbone.depth=18', 'model.backbone.pretrained=None', 'model.backbone.norm_eval=False',
    'model.cls_head.in_channels=512', 'model.cls_head.num_classes=5',
    'test_dataloader.dataset.pipeline.1.twice_sample=False',
    'test_dataloader.dataset.pipeline.3.scale=(-1,64)',
    'test_dataloader.dataset.pipeline.4.type=CenterCrop',
    'test_dataloader.dataset.pipeline.4.crop_size=56']
RESNET = 'mmpretrain::resnet/resnet18_8xb32_in1k.py'
RESNET_OPTIONS = ['test_dataloader.dataset.pipeline.1.scale=72',
                  'test_dataloader.dataset.pipeline.2.crop_size=64',
                  'model.head.num_classes=10']
THRESHOLD = '0.9999995'  # fp16 of this ResNet stays above 0.99: ask for more


def write_inputs(root):
    import cv2
    video = os.path.join(root, 'clip.mp4')
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*'mp4v'), 8, (96, 72))
    for t in range(24):  # a disc and a square moving: something for the temporal shift
        frame = np.full((72, 96, 3), 30, np.uint8)
        cv2.circle(frame, (10 + 3 * t, 36), 10, (40, 200, 90), -1)
        cv2.rectangle(frame, (60, 10 + t), (80, 30 + t), (200, 60, 40), -1)
        writer.write(frame)
    writer.release()
    image = os.path.join(root, 'image.png')
    img = np.full((90, 120, 3), 40, np.uint8)
    cv2.circle(img, (60, 45), 25, (30, 180, 220), -1)
    cv2.imwrite(image, img)
    return video, image


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Both commands at once (one per core); waits for both."""
    root = tmp_path_factory.mktemp('families')
    video, image = write_inputs(str(root))
    cmds = dict(
        tsm=[TSM, '--input', video, '--settings', 'fp32,fp16', '--isolate',
             '--cfg-options', *TSM_OPTIONS],
        resnet=[RESNET, '--input', image, '--setting', 'fp16', '--threshold', THRESHOLD,
                '--cfg-options', *RESNET_OPTIONS])
    procs = {}
    for name, args in cmds.items():
        out = root / name
        out.mkdir()
        command = 'run' if name == 'tsm' else 'suggest-fp32'
        log = open(out / 'log.txt', 'w')
        procs[name] = (subprocess.Popen(
            [sys.executable, TOOL, command, *args, '--out', str(out), '--no-progress'],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(root)), out, log)
    results = {}
    for name, (proc, out, log) in procs.items():
        rc = proc.wait(timeout=900)
        log.close()
        text = (out / 'log.txt').read_text()
        assert rc == 0, text[-5000:]
        results[name] = (out, text)
    return results


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_mmaction_tsm_video_with_attribution(runs):
    out, log = runs['tsm']
    report = out / 'report' / 'fp32_vs_fp16'
    rows = read_csv(report / 'compare.csv')
    by_name = {r['name']: r for r in rows}
    # the video went through the config's pipeline: 8 segments of 3 x 56 x 56
    assert by_name['__input__']['shape_a'] == '1x8x3x56x56'
    assert any(n.startswith('backbone.layer4') for n in by_name)  # the TSM ResNet-18
    assert by_name['cls_head.fc_cls']['dtype_b'] == 'torch.float16'
    outputs = {r['path']: r for r in rows if r['name'] == '__output__'}
    assert set(outputs) == {'[0].pred_label', '[0].pred_score'}  # --mode predict
    assert outputs['[0].pred_score']['shape_a'] == '5'
    # attribution: every conv has its own error, the ReLUs fed fp32 inputs none
    convs = [r for r in rows if r['module_type'] == 'Conv2d']
    assert convs and all(float(r['isolated_sqnr_db']) > 50 for r in convs)
    relus = [r for r in rows if r['module_type'] == 'ReLU']
    assert relus and all(float(r['isolated_max_absolute_error']) == 0 for r in relus)
    assert all(r['grade'] in ('pass', 'warn', 'error') for r in rows)
    advice = json.loads((report / 'advice.json').read_text())
    sources = next(f for f in advice['findings'] if f['rule'] == 'error_sources')
    assert sources['modules'] and all(m.startswith(('backbone', 'cls_head'))
                                      for m in sources['modules'])
    assert (report / 'report.html').stat().st_size > 10000
    assert 'isolated' in log and 'module calls' in log  # the attribution's cost, printed


def test_mmpretrain_resnet_suggest_fp32(runs):
    out, log = runs['resnet']
    found = json.loads((out / 'suggest_fp32.json').read_text())
    assert found['modules'], found
    assert set(found['modules']) <= set(found['ranking'])
    assert found['forward_passes'] == 3 + found['passes']
    snippet = (out / 'keep_fp32.py').read_text()
    assert 'keep_fp32(model, FP32_MODULES)' in snippet and 'FP32_MODULES = [' in log
    rows = read_csv(out / 'report' / 'compare.csv')
    assert any(r['name'] == 'backbone.conv1' and r['isolated_grade'] for r in rows)
    assert {r['path'] for r in rows if r['name'] == '__output__'} == {
        '[0].pred_label', '[0].pred_score'}
    html = (out / 'report' / 'report.html').read_text()
    assert 'fp32_fix' in html
    # the snippet works on a model built afresh: fp16 with it passes the tight threshold
    code = f'''
import numpy as np, torch
from ovkit.accuracy.openmmlab import build_model, host_scope, make_forward, prepare_inputs
from ovkit.accuracy.capture import flatten_tensors
from ovkit.accuracy.metrics import stream_metrics
opts = dict(x.split('=', 1) for x in {RESNET_OPTIONS!r})
opts = {{k: (int(v) if v.isdigit() else v) for k, v in opts.items()}}
model, cfg = build_model({RESNET!r}, None, opts)
x, samples, _ = prepare_inputs(model, cfg, {str(out.parent / 'image.png')!r})
fwd = make_forward(samples, 'predict')
def run(dtype=None):
    with host_scope(cfg), torch.no_grad(), torch.autocast('cpu', dtype=torch.float16,
                                                          enabled=dtype is not None):
        return flatten_tensors(fwd(model, x))[1][1].float().numpy()
ref = run()
before = stream_metrics(ref, run(torch.float16))['cosine_similarity']
exec(open({str(out / 'keep_fp32.py')!r}).read())
after = stream_metrics(ref, run(torch.float16))['cosine_similarity']
print(before, after)
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = map(float, proc.stdout.split()[-2:])
    assert before < float(THRESHOLD) <= after
