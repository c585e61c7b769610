"""PP-TSM configs: the full ones build without data (missing files named at build time), and
the documented ways to point them at data and weights change what is built."""
import glob
import os.path as osp

import pytest
import torch
from mmaction.registry import DATASETS, MODELS
from mmengine.registry import DefaultScope

from ovkit.tools.train import build_cfg, parse_args
from tests.conftest import REPO

CFG_DIR = osp.join(REPO, 'configs', 'pptsm')
FULL = sorted(p for p in glob.glob(osp.join(CFG_DIR, '*.py')) if 'shapes' not in p)
UCF101 = osp.join(CFG_DIR, 'pptsm_k400-distill-pretrained-r50_1xb16-1x1x8-30e_ucf101-rgb.py')
K400 = osp.join(CFG_DIR, 'pptsm_imagenet-pretrained-r50vd_8xb16-1x1x8-80e_kinetics400-rgb.py')
LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def build(registry, node):
    with DefaultScope.overwrite_default_scope('mmaction'):
        return registry.build(node)


def read_cfg(monkeypatch, *argv):
    """The config as tools/train.py reads it (``CONFIG --cfg-options ...``)."""
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args sets it when absent; keep it scoped
    return build_cfg(parse_args(list(argv)))


@pytest.fixture
def no_env(monkeypatch):
    for name in ('DATA_ROOT', 'PRETRAINED'):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize('path', FULL, ids=osp.basename)
def test_full_configs_build_without_data_and_name_missing_files(path, no_env):
    cfg = read_cfg(no_env, path)
    with pytest.raises(FileNotFoundError, match='model.backbone.pretrained'):
        build(MODELS, cfg.model)  # a missing weights file fails at build time
    with pytest.raises(FileNotFoundError, match='dataset.ann_file'):
        build(DATASETS, cfg.train_dataloader.dataset)
    cfg.model.backbone.pretrained = None
    model = build(MODELS, cfg.model)
    name = osp.basename(path)
    depth, classes = (101 if 'r101' in name else 50), (101 if 'ucf101' in name else 400)
    assert model.backbone.depth == depth and model.cls_head.fc_cls.out_features == classes
    assert model.data_preprocessor.blending.num_classes == classes
    assert all(cfg[loader].dataset.num_classes == classes for loader in LOADERS)
    if depth == 50:  # an R101 forward costs seconds and shows nothing the R50 ones do not
        model.eval()
        with torch.no_grad():
            feats, _ = model.extract_feat(torch.randn(1, 8, 3, 64, 64), test_mode=True)
        assert feats.shape[:2] == (8, 2048)


def write_list_data(root, lists, lines=('A/v_A_g01_c01 0', 'B/v_B_g01_c01 1')):
    (root / 'videos').mkdir(parents=True)
    for name in lists:
        (root / name).write_text(''.join(f'{ln}\n' for ln in lines))


def test_documented_overrides_change_the_built_paths(tmp_path, no_env):
    ckpt = tmp_path / 'w.pth'
    ckpt.write_bytes(b'')  # existence is what the build checks
    root = tmp_path / 'ucf'
    write_list_data(root, ['ucf101_train_split_1_videos.txt', 'ucf101_val_split_1_videos.txt'])

    # 1. The roots from the environment: DATA_ROOT=... PRETRAINED=... tools/train.py CONFIG
    no_env.setenv('DATA_ROOT', str(root))
    no_env.setenv('PRETRAINED', str(ckpt))
    cfg = read_cfg(no_env, UCF101)
    for loader, split in zip(LOADERS, ('train', 'val', 'val')):
        ds = build(DATASETS, cfg[loader].dataset)
        assert ds.ann_file == f'{root}/ucf101_{split}_split_1_videos.txt'
        assert ds.get_data_info(0)['filename'] == f'{root}/videos/A/v_A_g01_c01.avi'
    assert build(MODELS, cfg.model).backbone.pretrained == str(ckpt)
    assert cfg.label_map == f'{root}/annotations/classInd.txt'
    k400 = read_cfg(no_env, K400)
    assert k400.val_dataloader.dataset.data_prefix.video == f'{root}/videos_val'
    assert k400.model.backbone.pretrained == str(ckpt)

    # 2. One path by its own key: --cfg-options train_dataloader.dataset.ann_file=... etc.
    no_env.delenv('DATA_ROOT')
    no_env.delenv('PRETRAINED')
    other = tmp_path / 'other'
    write_list_data(other, ['train.txt'])
    cfg = read_cfg(no_env, UCF101, '--cfg-options',
                   f'train_dataloader.dataset.ann_file={other}/train.txt',
                   f'train_dataloader.dataset.data_prefix.video={other}/videos',
                   f'model.backbone.pretrained={ckpt}')
    ds = build(DATASETS, cfg.train_dataloader.dataset)
    assert ds.ann_file == f'{other}/train.txt'
    assert ds.get_data_info(1)['filename'] == f'{other}/videos/B/v_B_g01_c01.avi'
    assert build(MODELS, cfg.model).backbone.pretrained == str(ckpt)

    # 3. Why the docs do not offer --cfg-options data_root=...: the paths derived from it
    #    were computed when the file was read.
    cfg = read_cfg(no_env, UCF101, '--cfg-options', f'data_root={root}')
    assert cfg.data_root == str(root)
    assert cfg.train_dataloader.dataset.ann_file == 'data/ucf101/ucf101_train_split_1_videos.txt'
