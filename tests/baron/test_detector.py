"""The Baron detector as a whole: CLIP ownership, checkpoints, vocabulary, registry, errors."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

import ovkit.baron  # noqa: F401
from ovkit.shapes import SHAPE_CLASSES
from tests.conftest import REPO

CONFIG = osp.join(REPO, 'configs', 'baron', 'shapes.py')


@pytest.fixture(scope='module')
def model_cfg(tmp_path_factory):
    from ovkit.clip import build_class_embeddings, build_clip, load_prompt_templates
    tmp = tmp_path_factory.mktemp('baron')
    clip = build_clip(dict(model_name='tiny', seed=0))
    emb = build_class_embeddings(clip, list(SHAPE_CLASSES),
                                 load_prompt_templates('prompt_templates.txt')[:3])
    path = tmp / 'emb.npy'
    np.save(path, emb.numpy())
    cfg = Config.fromfile(CONFIG)
    # the config's trained shapes CLIP is not needed here: a random tiny one and its embeddings
    cfg.model.clip_cfg = dict(model_name='tiny', seed=0)
    cfg.model.roi_head.bbox_head.cls_embeddings_path = str(path)
    return cfg.model


def _build(model_cfg, **overrides):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = copy.deepcopy(model_cfg)
    cfg.update(overrides)
    return MODELS.build(cfg)


def _inputs(model, n=2, size=128, seed=0):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        pad_shape=(size, size), scale_factor=(1., 1.),
                                        img_id=i, batch_input_shape=(size, size)))
        s.gt_instances = InstanceData(bboxes=torch.tensor([[10., 12., 60., 70.]]),
                                      labels=torch.tensor([i % 6]))
        samples.append(s)
    images = torch.randn(n, 3, size, size, generator=g)
    return images, samples


def test_clip_outside_parameters_optimizer_and_checkpoint(model_cfg):
    from mmengine.optim import build_optim_wrapper
    model = _build(model_cfg)
    clip_params = {id(p) for p in model.clip.parameters()}
    assert clip_params and not clip_params & {id(p) for p in model.parameters()}
    assert not any(k.startswith('clip.') for k in model.state_dict())
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.01)))
    in_optim = {id(p) for g in optim.optimizer.param_groups for p in g['params']}
    assert not clip_params & in_optim

    images, samples = _inputs(model)
    model.train()
    losses = model.loss(images, samples)
    assert {'loss_cls', 'loss_bbox', 'loss_bag', 'loss_single'} <= set(losses)
    total = sum(v for k, v in losses.items() if 'loss' in k and torch.is_tensor(v))
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is None for p in model.clip.parameters())
    head = model.roi_head.bbox_head
    assert head.fc_cls.weight.grad is not None and head.fc_cls.weight.grad.abs().sum() > 0
    # The bag loss trains BaronKD's box-position embedding too.
    kd_grads = [p.grad for p in model.roi_head.kd.parameters()]
    assert kd_grads and all(g is not None for g in kd_grads)
    # CLIP stays in eval mode when the detector trains.
    assert not model.clip.training


def test_checkpoint_does_not_grow_by_clip_unless_asked(model_cfg, tmp_path):
    model = _build(model_cfg)
    torch.save(model.state_dict(), tmp_path / 'a.pth')
    with_clip = _build(model_cfg, save_clip=True)
    sd = with_clip.state_dict()
    clip_keys = [k for k in sd if k.startswith('clip.')]
    assert len(clip_keys) == len(with_clip.clip.state_dict())
    torch.save(sd, tmp_path / 'b.pth')
    clip_bytes = sum(v.numel() * v.element_size() for v in with_clip.clip.state_dict().values())
    size_a, size_b = osp.getsize(tmp_path / 'a.pth'), osp.getsize(tmp_path / 'b.pth')
    assert size_b - size_a > 0.9 * clip_bytes
    # Loading a checkpoint with CLIP restores it into the frozen model.
    other = _build(model_cfg, save_clip=True, clip_cfg=dict(model_name='tiny', seed=1))
    assert not torch.equal(other.clip.state_dict()['model.text_projection'],
                           sd['clip.model.text_projection'])
    other.load_state_dict(torch.load(tmp_path / 'b.pth'))
    for k, v in with_clip.clip.state_dict().items():
        torch.testing.assert_close(other.clip.state_dict()[k], v)


def test_clip_follows_device_and_dtype(model_cfg):
    model = _build(model_cfg)
    model.to(torch.float64)
    assert next(model.clip.parameters()).dtype == torch.float64


def test_open_vocabulary_classes_at_build_time(model_cfg):
    cfg = copy.deepcopy(model_cfg)
    names = ['circle', 'square', 'zebra']
    # The training embeddings file is not needed when a vocabulary is given.
    cfg.roi_head.bbox_head.cls_embeddings_path = 'nowhere/shapes.npy'
    model = _build(cfg, vocabulary=names)
    head = model.roi_head.bbox_head
    assert head.num_classes == 3 and head.cls_embeddings.shape[0] == 3
    from ovkit.clip import build_class_embeddings, load_prompt_templates
    expected = build_class_embeddings(model.clip, names, load_prompt_templates(
        'prompt_templates.txt'), layer=head.text_layer)
    torch.testing.assert_close(head.cls_embeddings, torch.nn.functional.normalize(expected, dim=-1))
    # A class-specific box regressor cannot take another class count.
    cfg.roi_head.bbox_head.reg_class_agnostic = False
    with pytest.raises(ValueError, match='reg_class_agnostic=True'):
        _build(cfg, vocabulary=names)
    model.eval()
    images, samples = _inputs(model, n=1)
    with torch.no_grad():
        results = model.predict(images, samples)
    logits = head.cls_logits(torch.randn(5, head.cls_embeddings.shape[1]))
    assert logits.shape == (5, 4)  # 3 vocabulary classes + background
    assert set(results[0].pred_instances.labels.tolist()) <= {0, 1, 2}


def test_missing_clip_checkpoint_names_key(model_cfg):
    with pytest.raises(FileNotFoundError,
                       match=r'model\.clip_cfg\.checkpoint.*nowhere/ViT-B-32\.pt'):
        _build(model_cfg, clip_cfg=dict(model_name='ViT-B-32', checkpoint='nowhere/ViT-B-32.pt'))


def test_missing_backbone_weights_named_at_init(model_cfg):
    cfg = copy.deepcopy(model_cfg)
    cfg.backbone.init_cfg = dict(type='Pretrained', checkpoint='nowhere/r50.pth')
    model = _build(cfg)
    with pytest.raises(FileNotFoundError, match=r'model\.backbone\.init_cfg\.checkpoint'):
        model.init_weights()


def test_every_ovkit_type_resolves_by_name_under_mmdet_scope():
    from mmdet.registry import METRICS, MODELS
    from mmengine.registry import DefaultScope
    found = 0
    with DefaultScope.overwrite_default_scope('mmdet'):
        for registry in (MODELS, METRICS):
            for name, cls in registry.module_dict.items():
                if cls.__module__.startswith('ovkit'):
                    assert registry.get(name) is cls
                    found += 1
    assert found >= 8


# ------------------------------------------------------------------ separate KD batch
def _two_branch(model_cfg, **overrides):
    cfg = copy.deepcopy(model_cfg)
    if cfg.data_preprocessor.type != 'MultiBranchDataPreprocessor':  # the shapes config has it
        cfg.data_preprocessor = dict(type='MultiBranchDataPreprocessor',
                                     data_preprocessor=cfg.data_preprocessor)
    cfg.rpn_head.type = 'DetachRPNHead'
    cfg.update(overrides)
    return _build(cfg)


def test_kd_batch_is_a_branch_of_its_own_with_a_no_grad_rpn(model_cfg):
    model = _two_branch(model_cfg).train()
    det_images, det_samples = _inputs(model, n=2, seed=0)
    kd_images, kd_samples = _inputs(model, n=2, seed=1)
    for s in kd_samples:  # KD images may have no (base) box at all
        s.gt_instances = s.gt_instances[:0]
    seen = {}
    kd_forward = model.roi_head.kd.forward

    def spy(x, rpn, images, metas, *args, **kwargs):
        seen.update(images=images, rpn=rpn, metas=metas)
        return kd_forward(x, rpn, images, metas, *args, **kwargs)

    model.roi_head.kd.forward = spy
    losses = model.loss(dict(det_batch=det_images, kd_batch=kd_images),
                        dict(det_batch=det_samples, kd_batch=kd_samples))
    assert {'loss_cls', 'loss_bbox', 'loss_rpn_cls', 'loss_rpn_bbox', 'loss_bag',
            'loss_single'} <= set(losses)
    assert seen['images'] is kd_images  # the bag teacher crops the KD images
    assert all(not r.bboxes.requires_grad and len(r) > 0 for r in seen['rpn'])
    # proposals follow train_cfg.rpn_proposal (max_per_img 300 in the shapes model)
    assert max(len(r) for r in seen['rpn']) <= model.train_cfg.rpn_proposal.max_per_img
    model.zero_grad()
    (losses['loss_bag'] + losses['loss_single']).backward()
    # the bag losses train backbone and box head through the KD images, never the RPN
    assert all(p.grad is None or (p.grad == 0).all() for p in model.rpn_head.parameters())
    assert model.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.roi_head.bbox_head.fc_cls.weight.grad.abs().sum() > 0
    # without a KD batch: detection losses only; a KD batch without kd is refused
    only_det = model.loss(dict(det_batch=det_images), dict(det_batch=det_samples))
    assert 'loss_bag' not in only_det and 'loss_cls' in only_det
    with pytest.raises(ValueError, match='det_branch'):
        model.loss(dict(sup=det_images), dict(sup=det_samples))
    no_kd = _two_branch(model_cfg)
    no_kd.roi_head.kd = None
    with pytest.raises(ValueError, match='roi_head.kd is None'):
        no_kd.loss(dict(kd_batch=kd_images), dict(kd_batch=kd_samples))


def test_two_source_dataloader_feeds_both_branches(model_cfg, shapes_workspace, monkeypatch):
    """mmdet's own pieces: a ConcatDataset of the detection set (empty images filtered) and the
    KD set (the same base-annotation json, empty images kept), MultiBranch pipelines,
    GroupMultiSourceSampler (2 + 2 images), MultiBranchDataPreprocessor."""
    import json

    from mmdet.registry import DATA_SAMPLERS, DATASETS
    from mmdet.utils import register_all_modules
    from mmengine.dataset import pseudo_collate
    register_all_modules(init_default_scope=True)
    monkeypatch.chdir(shapes_workspace)
    root = 'data/shapes/coco/'
    ann = json.load(open(root + 'annotations/train_base.json'))
    with_boxes = {a['image_id'] for a in ann['annotations']}
    assert len(with_boxes) < len(ann['images'])  # some images hold only novel shapes

    def pipeline(branch):
        return [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
                dict(type='Resize', scale=(128, 128), keep_ratio=True),
                dict(type='RandomFlip', prob=0.5),
                dict(type='MultiBranch', branch_field=['det_batch', 'kd_batch'],
                     **{branch: dict(type='PackDetInputs')})]

    def source(branch, filter_empty):
        return dict(type='CocoDataset', data_root=root, ann_file='annotations/train_base.json',
                    data_prefix=dict(img='train/'), metainfo=dict(classes=SHAPE_CLASSES),
                    filter_cfg=dict(filter_empty_gt=filter_empty, min_size=4),
                    pipeline=pipeline(branch))

    dataset = DATASETS.build(dict(type='ConcatDataset', datasets=[
        source('det_batch', True), source('kd_batch', False)]))
    assert len(dataset.datasets[0]) == len(with_boxes)
    assert len(dataset.datasets[1]) == len(ann['images'])
    sampler = DATA_SAMPLERS.build(dict(type='GroupMultiSourceSampler', dataset=dataset,
                                       batch_size=4, source_ratio=[1, 1], seed=0))
    it = iter(sampler)
    batch = pseudo_collate([dataset[next(it)] for _ in range(4)])
    model = _two_branch(model_cfg).train()
    data = model.data_preprocessor(batch, training=True)
    assert data['inputs']['det_batch'].shape[0] == 2 and data['inputs']['kd_batch'].shape[0] == 2
    losses = model.loss(data['inputs'], data['data_samples'])
    assert {'loss_cls', 'loss_bag', 'loss_single'} <= set(losses)
    for key, value in losses.items():
        if 'loss' in key:
            assert all(torch.isfinite(v).all() for v in (value if isinstance(value, list)
                                                         else [value])), key


def test_extra_test_classes_are_encoded_like_the_class_embeddings(model_cfg):
    from ovkit.clip import build_class_embeddings, load_prompt_templates
    model = _build(model_cfg, extra_test_classes=['zebra', 'kite'])
    head = model.roi_head.bbox_head
    expected = build_class_embeddings(model.clip, ['zebra', 'kite'], load_prompt_templates(
        'prompt_templates.txt'), layer=head.text_layer)
    torch.testing.assert_close(head.extra_test_embeddings, expected)
    model.eval()
    images, samples = _inputs(model, n=1)
    with torch.no_grad():
        results = model.predict(images, samples)
    assert set(results[0].pred_instances.labels.tolist()) <= set(range(len(SHAPE_CLASSES)))
    # a vocabulary replaces the classes and drops the extra ones
    vocab = _build(model_cfg, extra_test_classes=['zebra'], vocabulary=['circle', 'star'])
    assert vocab.roi_head.bbox_head.extra_test_embeddings is None
