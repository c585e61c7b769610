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


# configs/baron/shapes.py trains 900 iterations (the demo, tests/baron/test_demo.py); this
# file runs 40 of them.
SHORT = ['train_cfg.max_iters=40', 'default_hooks.checkpoint.interval=20',
         'default_hooks.logger.interval=5', 'log_processor.window_size=5']


@pytest.fixture(scope='module')
def trained(baron_workspace):
    work = baron_workspace / 'work_dirs' / 'baron'
    out = run_cmd(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), SHAPES, '2',
                   '--work-dir', str(work), '--cfg-options', *SHORT], cwd=baron_workspace)
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


def test_test_py_reports_novel_base_all_ap50(trained, baron_workspace):
    work, _ = trained
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'test.py'), SHAPES,
                   str(work / 'iter_40.pth'), '--work-dir', str(work / 'test')],
                  cwd=baron_workspace)
    for key in ('coco/novel_ap50:', 'coco/base_ap50:', 'coco/all_ap50:'):
        assert key in out, out[-3000:]


def test_resume(trained, baron_workspace):
    work, _ = trained
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'train.py'), SHAPES,
                   '--work-dir', str(work), '--resume', '--cfg-options', *SHORT,
                   'train_cfg.max_iters=45', 'train_cfg.val_interval=1000',
                   'default_hooks.checkpoint.interval=5'], cwd=baron_workspace)
    assert 'resumed epoch: 0, iter: 40' in out
    assert (work / 'iter_45.pth').exists()


def test_bags_centre_on_proposals_not_only_on_ground_truth(trained, baron_workspace,
                                                           monkeypatch):
    """Novel shapes are never ground truth, so BARON learns them only from bags centred on
    proposals; with a sampler objectness threshold above what the trained RPN scores, every
    image falls back to one box and the demo's novel AP50 stays ~0 (docs/baron.md). On the
    trained model's RPN output for validation images, the config's sampler keeps more than
    that fallback box."""
    from mmcv.transforms import Compose
    from mmdet.apis import init_detector
    from mmdet.utils import get_test_pipeline_cfg
    from mmengine.config import Config

    import ovkit.baron  # noqa: F401
    work, _ = trained
    monkeypatch.chdir(baron_workspace)
    cfg = Config.fromfile(SHAPES)
    # the newest checkpoint (test_resume may have replaced iter_40.pth: max_keep_ckpts=1)
    model = init_detector(cfg, (work / 'last_checkpoint').read_text().strip(), device='cpu')
    pipeline = Compose(get_test_pipeline_cfg(cfg))
    images = sorted(glob.glob('data/shapes/coco/val/*.png'))[:8]
    counts, best = [], []
    for path in images:
        data = pipeline(dict(img_path=path, img_id=0))
        batch = model.data_preprocessor(dict(inputs=[data['inputs']],
                                             data_samples=[data['data_samples']]), False)
        with torch.no_grad():
            props = model.rpn_head.predict(model.extract_feat(batch['inputs']),
                                           batch['data_samples'], rescale=False)[0]
        boxes = torch.cat([props.bboxes, props.scores[:, None]], 1)
        centres = model.roi_head.kd.sampler.select_centres(
            boxes, data['data_samples'].metainfo['img_shape'][:2])
        counts.append(len(centres))
        best.append(float(props.scores.max()))
    thr = model.roi_head.kd.sampler.objectness_thr
    assert sum(counts) > len(images), (counts, best, thr)


def test_region_confusion_counts_every_box_and_window(trained, baron_workspace, monkeypatch,
                                                      capsys):
    """tools/analysis/baron_region_confusion.py: one prediction per ground-truth box of the
    first images and per background window, which overlaps no ground truth."""
    from ovkit.baron import region_confusion as rc
    work, _ = trained
    monkeypatch.chdir(baron_workspace)
    ckpt = (work / 'last_checkpoint').read_text().strip()
    res = rc.main([SHAPES, ckpt, '--num-images', '5', '--bg-per-image', '3'])
    val = json.load(open('data/shapes/coco/annotations/val.json'))
    ids = {i['id'] for i in val['images'][:5]}
    assert sum(res['gt'].values()) == sum(a['image_id'] in ids for a in val['annotations'])
    assert sum(res['bg'].values()) == 15 and len(res['bg_mean_cos']) == 9
    assert res['classes'][-1] == 'background' and 'star' in res['classes']
    assert '15 background windows' in capsys.readouterr().out
    assert not rc._overlaps([0, 0, 10, 10], [[10, 0, 20, 10]])  # touching is not overlapping
    assert rc._overlaps([0, 0, 10, 10], [[9, 9, 20, 20]])


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


def _build_full_config(name, tmp_path, monkeypatch, random_vit_b32, rows, prepare=None):
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
    emb = _random_embeddings(tmp_path / 'emb.npy', rows)
    head = cfg.model.roi_head.bbox_head
    if isinstance(head.cls_embeddings_path, (list, tuple)):  # DetPro's if present, else ours
        head.cls_embeddings_path = [str(tmp_path / 'detpro.npy'), emb]
    else:
        head.cls_embeddings_path = emb
    if prepare is not None:
        prepare(cfg)
    model = MODELS.build(cfg.model)
    sources = cfg.train_dataloader.dataset.datasets
    sources = [s.get('dataset', s) for s in sources]  # LVIS wraps them in ClassBalancedDataset
    pipelines = [Compose(s.pipeline) for s in sources] + [
        Compose(cfg.test_dataloader.dataset.pipeline)]
    return cfg, model, pipelines


def test_full_coco_config_builds_without_data(tmp_path, monkeypatch, random_vit_b32):
    from torch import nn

    from ovkit.baron import DetachRPNHead
    cfg, model, (det, kd, test) = _build_full_config('coco.py', tmp_path, monkeypatch,
                                                     random_vit_b32, 65)
    head = model.roi_head.bbox_head
    assert type(head).__name__ == 'BaronShared4Conv1FCBBoxHead'
    assert head.num_classes == 65 and head.text_layer == 12 and head.num_words == 6
    assert int((head.class_weight[:65] == 0).sum()) == 17 and head.class_weight[65] == 0.7
    assert model.clip.text_width == 512 and model.roi_head.kd is not None
    assert type(model.data_preprocessor).__name__ == 'MultiBranchDataPreprocessor'
    assert any(type(m).__name__ == 'SyncBatchNorm' for m in model.backbone.modules())
    assert isinstance(model.rpn_head, DetachRPNHead)
    # frozen BN in the box head's convs; the MLP regressor
    bns = [m for m in head.shared_convs.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 4 and not any(p.requires_grad for m in bns for p in m.parameters())
    model.train()
    assert not any(m.training for m in bns)
    assert [type(m).__name__ for m in head.fc_reg] == ['Linear', 'ReLU', 'Linear']
    assert (head.fc_reg[0].in_features, head.fc_reg[2].out_features) == (1024, 4)
    # 80 + background at test time: the 15 other COCO classes, encoded at build time
    assert tuple(head.extra_test_embeddings.shape) == (15, 512)
    kd_head = model.roi_head.kd
    assert kd_head.single_features == 'maskclip' and kd_head.boxes_cache.start_iter == 10000
    assert kd_head.sampler.num_proposals == 300 and kd_head.sampler.use_gt
    assert det.transforms[-1].branch_field == ['det_batch', 'kd_batch']
    assert len(det.transforms) == len(kd.transforms) == 5 and len(test.transforms) == 4
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.train_cfg.max_iters == 90000
    assert cfg.test_evaluator.type == 'OVCocoAP50Metric'


def test_full_lvis_config_builds_without_data(tmp_path, monkeypatch, random_vit_b32):
    from ovkit.baron import BaronRPNHead, DetachRPNHead
    counts = [0 if i % 5 == 0 else i for i in range(1203)]  # every 5th class "rare"
    info = tmp_path / 'cat_info.json'
    info.write_text(json.dumps([dict(id=i + 1, image_count=c) for i, c in enumerate(counts)]))

    def prepare(cfg):
        from mmdet.registry import MODELS
        with pytest.raises(FileNotFoundError, match=r"class_weight='.*norare_cat_info\.json'"):
            MODELS.build(cfg.model)
        cfg.model.roi_head.bbox_head.class_weight = str(info)

    cfg, model, (det, kd, test) = _build_full_config('lvis.py', tmp_path, monkeypatch,
                                                     random_vit_b32, 1203, prepare)
    head = model.roi_head.bbox_head
    assert head.num_classes == 1203 and head.text_layer is None and head.num_words == 4
    assert head.cls_temp == 100.0 and head.test_cls_temp == pytest.approx(100 / 0.7)
    assert head.class_weight.tolist() == [float(c > 0) for c in counts] + [1.0]
    assert head.cls_embeddings_path == str(tmp_path / 'emb.npy')  # no DetPro file: fallback
    assert isinstance(model.rpn_head, BaronRPNHead)
    assert not isinstance(model.rpn_head, DetachRPNHead)
    assert any(type(m).__name__ == 'SyncBatchNorm' for m in head.modules())
    assert model.roi_head.with_mask and model.roi_head.mask_head.class_agnostic
    assert model.roi_head.kd.boxes_cache is None and model.roi_head.kd.bag_temp == 20.0
    assert cfg.train_dataloader.dataset.datasets[0].type == 'ClassBalancedDataset'
    assert cfg.test_evaluator.type == 'LVISMetric'
    assert len(det.transforms) == len(kd.transforms) == 5 and len(test.transforms) == 4


def test_full_lvis_ens_config_builds_without_data(tmp_path, monkeypatch, random_vit_b32):
    """configs/baron/lvis_ens.py: lvis.py with the reference's ensemble head (baron_kd_ens)."""
    from torch import nn

    from ovkit.baron import BaronShared4Conv1FCBBoxHead, EnsembleBaronShared4Conv1FCBBoxHead
    counts = [0 if i % 5 == 0 else i for i in range(1203)]
    info = tmp_path / 'cat_info.json'
    info.write_text(json.dumps([dict(id=i + 1, image_count=c) for i, c in enumerate(counts)]))

    def prepare(cfg):
        cfg.model.roi_head.bbox_head.class_weight = str(info)

    cfg, model, _ = _build_full_config('lvis_ens.py', tmp_path, monkeypatch, random_vit_b32,
                                       1203, prepare)
    head = model.roi_head.bbox_head
    assert type(head) is EnsembleBaronShared4Conv1FCBBoxHead
    assert head.ensemble_factor == pytest.approx(2 / 3) and head.cls_temp == 100.0
    kd = head.kd_head
    assert type(kd) is BaronShared4Conv1FCBBoxHead and not kd.with_reg
    assert (kd.num_words, kd.word_dim, kd.num_classes, kd.text_layer) == (4, 512, 1203, None)
    assert len(kd.shared_convs) == 4 and kd.shared_fcs[0].out_features == 1024
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in kd.modules()) == 4
    # initialised from the SOCO checkpoint's box head, as the reference's kd head
    assert kd.init_cfg == dict(type='Pretrained', prefix='roi_head.bbox_head',
                               checkpoint=cfg.load_from)
    # the rare classes (weight 0) are the ensemble's novel ones; the background is base
    assert head.novel_mask(1204).tolist() == [c == 0 for c in counts] + [False]
    assert cfg.model.roi_head.kd.sampler.num_proposals == 500  # the rest is lvis.py's


def test_ensemble_head_trains_and_evaluates_through_the_tools(baron_workspace):
    """configs/baron/shapes_ens.py (the ensemble head) through tools/train.py: the bag and
    single-region losses run (through the KD branch, whose weights are saved), and the
    evaluation at the end takes the ensembled scores through mmdet's prediction and metric.
    (Which branch the losses reach: tests/baron/test_bbox_head.py.)"""
    work = baron_workspace / 'work_dirs' / 'ens'
    config = osp.join(REPO, 'configs', 'baron', 'shapes_ens.py')
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'train.py'), config,
                   '--work-dir', str(work), '--cfg-options', 'train_cfg.max_iters=6',
                   'default_hooks.logger.interval=1', 'randomness.seed=0'], cwd=baron_workspace)
    rows = _rows(work)
    assert rows and all(math.isfinite(r['loss_bag']) and math.isfinite(r['loss_single'])
                        for r in rows)
    assert 'coco/novel_ap50:' in out and 'coco/base_ap50:' in out
    state = torch.load(str(work / 'iter_6.pth'))['state_dict']
    assert 'roi_head.bbox_head.kd_head.fc_cls.weight' in state
    assert not any(k.startswith('roi_head.bbox_head.kd_head.fc_reg') for k in state)
