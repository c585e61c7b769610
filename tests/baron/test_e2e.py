"""BARON through the real tools: 2-process CPU training on shapes, test.py, resume; the full
OV-COCO config builds without data."""
import glob
import json
import math
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO, run_cmd

pytestmark = pytest.mark.e2e
SHAPES = osp.join(REPO, 'configs', 'baron', 'shapes.py')
BARON_LOSSES = ('loss_cls', 'loss_bbox', 'loss_bag', 'loss_single', 'loss_rpn_cls',
                'loss_rpn_bbox')


@pytest.fixture(scope='module')
def trained(shapes_workspace):
    ws = shapes_workspace
    run_cmd([sys.executable, osp.join(REPO, 'tools', 'data', 'gen_class_embeddings.py'),
             '--model-name', 'tiny', '--classes', 'data/shapes/classes.txt',
             '--out', 'data/shapes/baron/shapes_tiny_clip.npy'], cwd=ws)
    work = ws / 'work_dirs' / 'baron'
    out = run_cmd(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), SHAPES, '2',
                   '--work-dir', str(work)], cwd=ws)
    return work, out


def _rows(work):
    rows = []
    for path in sorted(glob.glob(osp.join(str(work), '*', 'vis_data', 'scalars.json'))):
        rows += [json.loads(line) for line in open(path) if line.strip()]
    return [r for r in rows if 'loss' in r]


def test_two_process_training_with_every_baron_loss_finite(trained):
    work, out = trained
    assert 'distributed run: world size 2, backend gloo' in out
    rows = _rows(work)
    assert rows and rows[-1]['iter'] == 40
    for row in rows:
        for key in BARON_LOSSES:
            assert key in row and math.isfinite(row[key]), (key, row)
    assert rows[-1]['loss'] < rows[0]['loss']
    ckpt = torch.load(str(work / 'iter_40.pth'))
    assert not any(k.startswith('clip.') for k in ckpt['state_dict'])


def test_test_py_reports_novel_base_all_ap50(trained, shapes_workspace):
    work, _ = trained
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'test.py'), SHAPES,
                   str(work / 'iter_40.pth'), '--work-dir', str(work / 'test')],
                  cwd=shapes_workspace)
    for key in ('coco/novel_ap50:', 'coco/base_ap50:', 'coco/all_ap50:'):
        assert key in out, out[-3000:]


def test_resume(trained, shapes_workspace):
    work, _ = trained
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'train.py'), SHAPES,
                   '--work-dir', str(work), '--resume', '--cfg-options',
                   'train_cfg.max_iters=45', 'train_cfg.val_interval=1000',
                   'default_hooks.checkpoint.interval=5'], cwd=shapes_workspace)
    assert 'resumed epoch: 0, iter: 40' in out
    assert (work / 'iter_45.pth').exists()


@pytest.fixture(scope='module')
def random_vit_b32(tmp_path_factory):
    """CLIP ViT-B/32-shaped weights (random; real ones are never downloaded in tests)."""
    import open_clip
    path = tmp_path_factory.mktemp('clip') / 'ViT-B-32.pt'
    torch.manual_seed(0)
    sd = open_clip.create_model('ViT-B-32', pretrained=None).state_dict()
    torch.save({k: v.half() for k, v in sd.items()}, path)
    return str(path)


def _random_embeddings(path, rows):
    emb = np.random.default_rng(0).normal(size=(rows, 512)).astype(np.float32)
    np.save(path, emb / np.linalg.norm(emb, axis=1, keepdims=True))
    return str(path)


def _build_full_config(name, tmp_path, monkeypatch, random_vit_b32, rows):
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    import ovkit.baron  # noqa: F401
    register_all_modules(init_default_scope=True)
    monkeypatch.chdir(REPO)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'baron', name))
    # Each missing file stops the build with the key, the path and how to make or get it.
    with pytest.raises(FileNotFoundError, match=r'model\.clip_cfg\.checkpoint'):
        MODELS.build(cfg.model)
    cfg.model.clip_cfg.checkpoint = random_vit_b32
    with pytest.raises(FileNotFoundError, match=r'cls_embeddings_path=.*gen_class_embeddings'):
        MODELS.build(cfg.model)
    cfg.model.roi_head.bbox_head.cls_embeddings_path = _random_embeddings(
        tmp_path / 'emb.npy', rows)
    model = MODELS.build(cfg.model)
    pipelines = [Compose(cfg.train_dataloader.dataset.get('dataset', cfg.train_dataloader.dataset)
                         .pipeline), Compose(cfg.test_dataloader.dataset.pipeline)]
    return cfg, model, pipelines


def test_full_coco_config_builds_without_data(tmp_path, monkeypatch, random_vit_b32):
    cfg, model, (train, test) = _build_full_config('coco.py', tmp_path, monkeypatch,
                                                   random_vit_b32, 65)
    head = model.roi_head.bbox_head
    assert type(head).__name__ == 'BaronShared4Conv1FCBBoxHead'
    assert head.num_classes == 65 and head.text_layer == 12 and head.num_words == 6
    assert int((head.class_weight[:65] == 0).sum()) == 17
    assert model.clip.text_width == 512 and model.roi_head.kd is not None
    assert any(type(m).__name__ == 'SyncBatchNorm' for m in model.backbone.modules())
    assert len(train.transforms) == 5 and len(test.transforms) == 4
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.train_cfg.max_iters == 90000
    assert cfg.test_evaluator.type == 'OVCocoAP50Metric'


def test_full_lvis_config_builds_without_data(tmp_path, monkeypatch, random_vit_b32):
    cfg, model, (train, test) = _build_full_config('lvis.py', tmp_path, monkeypatch,
                                                   random_vit_b32, 1203)
    head = model.roi_head.bbox_head
    assert head.num_classes == 1203 and head.text_layer is None and head.num_words == 4
    assert model.roi_head.with_mask and model.roi_head.mask_head.class_agnostic
    assert cfg.train_dataloader.dataset.type == 'ClassBalancedDataset'
    assert cfg.test_evaluator.type == 'LVISMetric'
    assert len(train.transforms) == 5 and len(test.transforms) == 4
