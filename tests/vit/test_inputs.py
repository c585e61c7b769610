"""The preflight of ViT configs (ovkit/vit/inputs.py): a missing image folder or weights file is
one ``error:`` line naming the config key, the path and the fix, before any model is built."""
import os.path as osp
import zipfile

import pytest
import torch
from mmengine.config import Config

from ovkit.engine import preflight
from ovkit.tools.train import main as train_main
from tests.conftest import REPO

NANO = osp.join(REPO, 'configs', 'vit', 'vit-nano-p8_40e_shapes-imagefolder.py')
FOLDER = osp.join(REPO, 'configs', 'vit', 'vit-base-p16_augreg-ft-10e_imagefolder.py')


def _errors(capsys, argv):
    with pytest.raises(SystemExit) as e:
        train_main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert 'Traceback' not in err, err
    return [line for line in err.splitlines() if line.startswith('error:')], err


def test_missing_shapes_folder_is_one_error_line(tmp_path, monkeypatch, capsys):
    """The CI config where no data was generated: the tool stops before building anything."""
    monkeypatch.chdir(tmp_path)
    errors, err = _errors(capsys, [NANO, '--work-dir', str(tmp_path / 'w')])
    assert errors == [
        "error: train_dataloader.dataset.data_root = 'data/shapes/imagefolder': not found "
        f'(absolute path {tmp_path}/data/shapes/imagefolder; nearest existing folder {tmp_path})'
        '. Fix: generate it with `python tools/data/make_shapes.py --out data/shapes --kinds '
        'imagefolder` (run from the folder the path is relative to)'], err
    assert not (tmp_path / 'w').exists()  # no Runner was made


def _weights(tmp_path, name, damage=None):
    """A real (tiny) timm-layout weights file, optionally damaged."""
    from ovkit.vit import OVKitViT
    sd = OVKitViT(arch=dict(embed_dim=16, depth=1, num_heads=2), img_size=32).state_dict()
    path = tmp_path / name
    if name.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif name.endswith('.npz'):
        import numpy as np
        np.savez(str(path), **{'embedding/kernel': np.zeros((4, 4, 3, 16), 'float32')})
    else:
        torch.save(sd, str(path))
    if damage == 'truncate':
        path.write_bytes(path.read_bytes()[:osp.getsize(path) // 2])
    elif damage == 'text':
        path.write_text('the weights are on the shared drive\n')
    return str(path)


@pytest.mark.parametrize('name,damage,what', [
    ('missing/vit_small_patch16_224.augreg_in21k_ft_in1k/model.safetensors', None, 'not found'),
    ('w.safetensors', 'truncate', 'truncated .safetensors file'),
    ('w.npz', 'truncate', 'not a JAX .npz file'),
    ('w.pth', 'truncate', 'truncated'),
    ('w.pth', 'text', 'not a torch checkpoint'),
    ('w.safetensors', None, None),
    ('w.npz', None, None),
    ('w.pth', None, None),
])
def test_pretrained_weights_checked_without_loading(tmp_path, monkeypatch, name, damage, what):
    """Every weights format of the backbone: whole files pass, damaged or missing ones are
    one problem naming model.backbone.pretrained and where the weights are published."""
    (tmp_path / 'images' / 'train' / 'a').mkdir(parents=True)
    (tmp_path / 'images' / 'val' / 'a').mkdir(parents=True)
    for split in ('train', 'val'):
        (tmp_path / 'images' / split / 'a' / '0.png').write_bytes(b'png')
    monkeypatch.setenv('DATA_ROOT', str(tmp_path / 'images'))
    cfg = Config.fromfile(FOLDER)
    path = str(tmp_path / name) if damage is None and what else _weights(tmp_path, name, damage)
    cfg.model.backbone.pretrained = path
    problems, _ = preflight.check(cfg, 'train', config_file=FOLDER)
    if what is None:
        assert problems == []
        return
    (problem, ) = problems
    assert problem.key == 'model.backbone.pretrained' and problem.path == path
    assert what in problem.what, problem
    if 'vit_small' in name:
        assert problem.fix.startswith('download https://huggingface.co/timm/vit_small_patch16_'
                                      '224.augreg_in21k_ft_in1k (model.safetensors) to that path')
    else:
        assert 'https://huggingface.co/timm' in problem.fix and 'gs://vit_models' in problem.fix
    assert problem.fix.endswith('or set model.backbone.pretrained=None to train from scratch')
    assert zipfile.is_zipfile(path) == (name.endswith(('.npz', '.pth')) and damage is None)


def test_own_folder_missing_names_data_root_and_weights(tmp_path, monkeypatch):
    """The folder config pointed (DATA_ROOT) at a folder that is not there: the fix says how to
    lay it out and where to set it (not --cfg-options, which cannot change the classes)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('DATA_ROOT', 'photos')
    cfg = Config.fromfile(FOLDER)
    problems, _ = preflight.check(cfg, 'train', config_file=FOLDER)
    assert [p.key for p in problems] == ['train_dataloader.dataset.data_root',
                                         'model.backbone.pretrained']
    folder = problems[0]
    assert folder.path == 'photos' and folder.what.startswith('not found')
    assert folder.fix.startswith('put the images as photos/train/<class name>/<image>.jpg and '
                                 'photos/val/<class name>/<image>.jpg')
    assert 'DATA_ROOT' in folder.fix and '--cfg-options cannot change it' in folder.fix


def test_val_folder_without_a_class_is_one_error_line(tmp_path, monkeypatch, capsys):
    """A class folder missing from val/ is caught when the config is read (folder_classes) and
    printed by the tool as one line, like the preflight's problems."""
    for split, classes in (('train', 'ab'), ('val', 'a')):
        for c in classes:
            (tmp_path / 'd' / split / c).mkdir(parents=True)
            (tmp_path / 'd' / split / c / '0.png').write_bytes(b'png')
    monkeypatch.setenv('DATA_ROOT', str(tmp_path / 'd'))
    errors, err = _errors(capsys, [FOLDER, '--work-dir', str(tmp_path / 'w')])
    assert len(errors) == 1, err
    assert f"data_root = '{tmp_path}/d': val/ and train/ must hold the same class folders; " \
        "val/ lacks ['b']" in errors[0]
