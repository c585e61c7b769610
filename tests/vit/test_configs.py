"""configs/vit: every config parses and builds; the image-folder config takes its classes from
the folder named by data_root (or DATA_ROOT) and its normalisation from its checkpoint."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from PIL import Image

from tests.conftest import REPO

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'vit', '*.py')))
FOLDER_CFG = osp.join(REPO, 'configs', 'vit', 'vit-base-p16_augreg-ft-10e_imagefolder.py')


def build(cfg):
    """The config's model as the Runner builds it (ovkit.vit.build_model), on meta tensors."""
    import ovkit.vit  # noqa: F401
    from ovkit.vit.build import build_model
    with torch.device('meta'):
        return build_model(cfg)


@pytest.mark.parametrize('path', [p for p in CONFIGS if p.endswith('in1k.py')],
                         ids=osp.basename)
def test_imagenet_recipes_build(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmpretrain'
    model = build(cfg)
    assert type(model.backbone).__name__ == 'OVKitViT' and model.head.num_classes == 1000
    # the top-level data_preprocessor (mmpretrain's ImageNet base) is the model's, as in a Runner
    assert 'data_preprocessor' not in cfg.model and cfg.data_preprocessor.mean
    assert model.data_preprocessor._enable_normalize and model.data_preprocessor.to_rgb
    if 'augreg' in path:  # timm's ViT-B/16 exactly: its state dict loads as is
        assert sum(p.numel() for p in model.parameters()) == 86_567_656
        assert cfg.data_preprocessor.mean == [127.5] * 3  # the checkpoint's own normalisation
    else:  # mmpretrain's recipe: representation layer, dropout, Mixup, clipping
        assert model.backbone.num_features == 3072 and cfg.optim_wrapper.clip_grad.max_norm == 1
        assert cfg.model.train_cfg.augments.type == 'Mixup'
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert all(keys[k].decay_mult == 0 for k in ('.cls_token', '.pos_embed', '.dist_token'))


def make_folder(root, classes, n=2):
    for split in ('train', 'val'):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(n):
                Image.new('RGB', (40, 30), (k * 40, 10, 200)).save(d / f'{k}.jpg')


def test_folder_config_takes_classes_from_data_root(tmp_path, monkeypatch):
    make_folder(tmp_path, ['tulip', 'daisy', 'rose'])
    monkeypatch.setenv('DATA_ROOT', str(tmp_path))
    cfg = Config.fromfile(FOLDER_CFG)
    assert cfg.data_root == str(tmp_path)
    assert cfg.classes == ('daisy', 'rose', 'tulip')  # sorted, as torchvision
    assert cfg.model.head.num_classes == 3
    assert cfg.train_dataloader.dataset.data_root == str(tmp_path)
    # the normalisation is the checkpoint's (timm's augreg cfg: mean = std = 0.5)
    assert cfg.model.data_preprocessor.mean == [127.5] * 3
    assert cfg.model.backbone.pretrained.endswith(
        'vit_base_patch16_224.augreg2_in21k_ft_in1k/model.safetensors')
    # the dataset mmpretrain builds agrees with the head
    from mmpretrain.registry import DATASETS

    import ovkit.vit  # noqa: F401
    ds = DATASETS.build(dict(cfg.val_dataloader.dataset, pipeline=[]))
    assert ds.metainfo['classes'] == cfg.classes and len(ds) == 6
    assert sorted({ds.get_data_info(i)['gt_label'] for i in range(6)}) == [0, 1, 2]


def test_folder_config_without_folder_explains(tmp_path, monkeypatch):
    monkeypatch.setenv('DATA_ROOT', str(tmp_path / 'absent'))
    cfg = Config.fromfile(FOLDER_CFG)  # reading the config works (e.g. to print it)
    assert cfg.classes is None
    with pytest.raises(ValueError, match='data_root'):
        build(cfg)


def test_missing_pretrained_file_names_config_key(tmp_path, monkeypatch):
    make_folder(tmp_path, ['a', 'b'])
    monkeypatch.setenv('DATA_ROOT', str(tmp_path))
    cfg = Config.fromfile(FOLDER_CFG)
    cfg.model.backbone.pretrained = str(tmp_path / 'checkpoints' / 'vit_base_patch16_224.'
                                        'augreg2_in21k_ft_in1k' / 'model.safetensors')
    cfg.model.backbone.arch = dict(embed_dim=32, depth=1, num_heads=2)  # small: init is slow
    cfg.model.head.in_channels = 32
    from ovkit.vit.build import build_model
    model = build_model(cfg)
    with pytest.raises(FileNotFoundError) as e:
        model.init_weights()
    msg = str(e.value)
    assert 'model.backbone.pretrained' in msg
    assert 'https://huggingface.co/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k' in msg
