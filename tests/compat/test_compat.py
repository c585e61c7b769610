"""Each upstream fix in ovkit.compat, exercised the way users hit the bug."""
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import ovkit  # noqa: F401  (applies compat)
from tests.conftest import experiment_name


class _ToyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        out = self.linear(torch.stack(inputs) if isinstance(inputs, list) else inputs)
        if mode == 'loss':
            return dict(loss=((out - 1) ** 2).mean())
        return [out]


class _ToyDataset(torch.utils.data.Dataset):
    metainfo = dict(classes=('a', 'b'))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(3, generator=g))


def _runner(work_dir, max_iters, **kwargs):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Model(BaseModel):
        def __init__(self):
            super().__init__()
            self.toy = _ToyModel()

        def forward(self, inputs, data_samples=None, mode='loss'):
            return self.toy(inputs, data_samples, mode)

    return Runner(
        model=Model(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=_ToyDataset(), batch_size=2,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=max_iters, val_interval=1000),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01, momentum=0.9)),
        param_scheduler=[dict(type='MultiStepLR', by_epoch=False, milestones=[3])],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=4, by_epoch=False)),
        randomness=dict(seed=0), experiment_name=experiment_name('compat'), **kwargs)


def test_torch_loads_weights_only_by_default():
    # The premise of the fix: torch >= 2.6 loads with weights_only=True unless told otherwise.
    import inspect
    src = inspect.getsource(torch.load)
    assert 'weights_only' in src
    major, minor = (int(x) for x in torch.__version__.split('.')[:2])
    assert (major, minor) >= (2, 6)


def test_mmengine_checkpoint_loads_and_resumes(tmp_path):
    from mmengine.runner import load_checkpoint
    runner = _runner(tmp_path / 'a', max_iters=4)
    runner.train()
    # numpy values in meta, beside the message hub's HistoryBuffers (numpy arrays inside).
    runner.save_checkpoint(str(tmp_path), 'extra.pth', meta=dict(
        np_scalar=np.float64(1.5), np_int=np.int64(7), np_array=np.arange(3)))
    path = tmp_path / 'a' / 'iter_4.pth'
    import zipfile
    with zipfile.ZipFile(path) as zf:  # the pickle really holds globals torch does not allow
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith('data.pkl')))
    assert b'HistoryBuffer' in pkl and b'getattr' in pkl

    ckpt = torch.load(str(tmp_path / 'extra.pth'))  # default weights_only=True
    assert ckpt['meta']['np_scalar'] == 1.5 and ckpt['meta']['np_int'] == 7
    np.testing.assert_array_equal(ckpt['meta']['np_array'], np.arange(3))
    hub = ckpt['message_hub']['log_scalars']['train/loss']
    assert hub.current() == pytest.approx(float(hub._log_history[-1]))
    assert hub.statistics('min') <= hub.statistics('max')

    model = _ToyModel()
    load_checkpoint(model, str(path), map_location='cpu', revise_keys=[(r'^toy\.', '')])
    saved = torch.load(str(path))['state_dict']['toy.linear.weight']
    torch.testing.assert_close(model.linear.weight, saved)

    resumed = _runner(tmp_path / 'a', max_iters=8, resume=True, load_from=str(path))
    resumed.train()
    assert resumed.iter == 8
    assert (tmp_path / 'a' / 'iter_8.pth').exists()


class _Evil:
    def __reduce__(self):
        return (subprocess.call, (['true'],))


class _EvilGetattr:
    """Tries to reach a non-HistoryBuffer attribute through the getattr stand-in."""

    def __reduce__(self):
        return (getattr, (np.ndarray, 'tofile'))


class _EvilRegister:
    """A public HistoryBuffer classmethod that would change global state while loading."""

    def __reduce__(self):
        from mmengine.logging import HistoryBuffer
        return (getattr, (HistoryBuffer, 'register_statistics'))


def test_unknown_globals_still_refused(tmp_path):
    for i, obj in enumerate((_Evil(), _EvilGetattr(), _EvilRegister())):
        path = tmp_path / f'evil{i}.pth'
        torch.save(dict(state_dict={}, payload=obj), str(path))
        with pytest.raises(pickle.UnpicklingError):
            torch.load(str(path))


def test_fresh_process_loads_checkpoint(tmp_path):
    # No HistoryBuffer exists yet in a new process (as in `tools/test.py CONFIG CKPT`).
    runner = _runner(tmp_path / 'a', max_iters=4)
    runner.train()
    code = (f'import ovkit, torch; c = torch.load({str(tmp_path / "a" / "iter_4.pth")!r}); '
            'print(c["meta"]["iter"])')
    proc = _run_python(code)
    assert proc.returncode == 0 and proc.stdout.strip() == '4', proc.stderr[-2000:]


def _run_python(code):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)


def test_mmaction_models_import_needs_the_fix():
    # Without ovkit the wheel is broken (if this starts passing, drop the patch).
    bare = _run_python('import mmaction.models')
    assert bare.returncode != 0 and 'drn' in bare.stderr
    fixed = _run_python('import ovkit, mmaction.models; print("ok")')
    assert fixed.returncode == 0, fixed.stderr[-3000:]


def test_mmaction_tsm_builds_and_runs():
    import mmaction.models  # noqa: F401
    from mmaction.registry import MODELS
    from mmaction.utils import register_all_modules
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)  # leave the global scope to other tests
    scope = DefaultScope.overwrite_default_scope('mmaction')
    scope.__enter__()
    model = MODELS.build(dict(
        type='Recognizer2D',
        backbone=dict(type='ResNetTSM', depth=18, pretrained=None, num_segments=4,
                      norm_eval=False),
        cls_head=dict(type='TSMHead', num_classes=5, in_channels=512, num_segments=4,
                      average_clips='prob'),
        data_preprocessor=dict(type='ActionDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], format_shape='NCHW')))
    model.eval()
    with torch.no_grad():
        feats = model(torch.randn(2, 4, 3, 64, 64), mode='tensor')  # 2 clips x 4 segments
        scores = model.cls_head(feats, num_segs=4)
    assert feats.shape == (8, 512, 2, 2) and scores.shape == (2, 5)
    # The DRN stand-in fails with a message naming the fix.
    try:
        with pytest.raises(ImportError, match='mmaction2'):
            MODELS.build(dict(type='DRN'))
    finally:
        scope.__exit__(None, None, None)


def _tiny_lvis(tmp_path):
    cats = [dict(id=1, name='a', frequency='r', synset='a.n.01', image_count=1,
                 instance_count=1),
            dict(id=2, name='b', frequency='f', synset='b.n.01', image_count=2,
                 instance_count=3)]
    images = [dict(id=i, width=100, height=100, neg_category_ids=[],
                   not_exhaustive_category_ids=[]) for i in (1, 2)]
    boxes = [(1, 1, [10, 10, 30, 30]), (1, 2, [50, 50, 20, 40]), (2, 2, [5, 5, 60, 60]),
             (2, 2, [70, 10, 20, 20])]
    anns = [dict(id=k + 1, image_id=im, category_id=c, bbox=b, area=b[2] * b[3],
                 segmentation=[[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3],
                                b[0], b[1] + b[3]]])
            for k, (im, c, b) in enumerate(boxes)]
    path = tmp_path / 'lvis.json'
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    dets = [dict(image_id=im, category_id=c, bbox=b, score=0.9) for im, c, b in boxes]
    return str(path), dets


def test_lvis_eval_runs_on_numpy2(tmp_path):
    assert not hasattr(np, 'float')  # numpy removed it; the fix must not add it back globally
    from lvis import LVIS, LVISEval, LVISResults
    path, dets = _tiny_lvis(tmp_path)
    gt = LVIS(path)
    evaluator = LVISEval(gt, LVISResults(gt, dets), iou_type='bbox')
    evaluator.run()
    # Perfect detections: every AP is 1 (computed by hand: each gt matched at IoU 1).
    assert evaluator.results['AP'] == pytest.approx(1.0)
    assert evaluator.results['APr'] == pytest.approx(1.0)
    assert not hasattr(np, 'float')


def test_cpu_ddp_wrapper_accepts_local_rank_device_ids(tmp_path):
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                            world_size=1)
    try:
        # What mmengine's Runner.wrap_model passes on every machine.
        wrapped = MMDistributedDataParallel(module=_ToyModel(), device_ids=[0])
        out = wrapped.module(torch.ones(2, 3), mode='tensor')[0]
        assert out.shape == (2, 1)
        # SyncBN (as in configs/baron/coco.py) has no CPU kernel: it becomes BatchNorm.
        sync = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
        with pytest.warns(UserWarning, match='SyncBatchNorm needs a GPU'):
            wrapped = MMDistributedDataParallel(module=sync, device_ids=[0])
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in wrapped.module.modules())
        assert wrapped.module(torch.randn(2, 3, 5, 5)).shape == (2, 4, 5, 5)
    finally:
        dist.destroy_process_group()


def test_cpu_launcher_uses_gloo_without_set_device(monkeypatch):
    from mmengine.dist import utils as dist_utils
    calls = {}
    monkeypatch.setenv('RANK', '0')
    monkeypatch.setenv('LOCAL_RANK', '3')  # no such GPU: set_device would raise
    monkeypatch.setattr(torch.cuda, 'set_device', lambda *a: calls.setdefault('set', a))
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda backend, **kw: calls.setdefault('backend', backend))
    with pytest.warns(UserWarning, match='gloo'):
        dist_utils._init_dist_pytorch('nccl')
    assert calls == {'backend': 'gloo'}
