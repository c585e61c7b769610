"""Scene graphs and the shared robustness layer (ovkit.engine): the preflight names every
missing VG150 input (config key, path, how to obtain it) before anything starts, and a corrupt
training image is skipped and counted instead of killing the run."""
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

import ovkit.sgg  # noqa: F401  (declares the inputs)
from ovkit.engine.preflight import check
from tests.conftest import REPO, run_cmd
from tests.sgg.vg_fixture import random_images, write_vg

CFG = osp.join(REPO, 'configs', 'sgg')
MOTIFS_VG = osp.join(CFG, 'motifs_x101-fpn_sgcls_vg150.py')


def vg_config(root, glove, detector):
    cfg = Config.fromfile(MOTIFS_VG)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
    cfg.model.detector_checkpoint = detector
    cfg.model.relation_head.predictor.glove_dir = glove
    for ev in ('val_evaluator', 'test_evaluator'):
        cfg[ev].zeroshot_triplets = osp.join(root, 'zeroshot_triplet.pytorch')
    return cfg


def problems(cfg, mode='train'):
    found, _ = check(cfg, mode, config_file='motifs.py')
    return {p.key: p for p in found}


def test_preflight_names_each_missing_vg150_input(tmp_path):
    # nothing there: one line for the data folder (not one per file under it), the detector
    # checkpoint and the GloVe folder, each with where the file is published
    got = problems(vg_config(str(tmp_path / 'vg'), str(tmp_path / 'glove'),
                             str(tmp_path / 'ckpt' / 'det.pth')))
    assert set(got) == {'train_dataloader.dataset.data_root', 'model.detector_checkpoint',
                        'model.relation_head.predictor.glove_dir'}, got
    assert 'not found' in got['train_dataloader.dataset.data_root'].what
    assert 'Data: VG150' in got['train_dataloader.dataset.data_root'].fix
    det = got['model.detector_checkpoint']
    assert det.path == str(tmp_path / 'ckpt' / 'det.pth')
    assert 'pretrained_faster_rcnn/model_final.pth' in det.fix and 'sgb_detector.py' in det.fix
    assert 'nlp.stanford.edu/projects/glove' in got['model.relation_head.predictor.glove_dir'].fix

    # the data folder, but dict file gone, images absent, GloVe without its file, checkpoint
    # not a checkpoint
    root = write_vg(str(tmp_path / 'vg'), random_images(np.random.default_rng(0), 6),
                    make_images=False)
    os.makedirs(osp.join(root, 'VG_100K', 'elsewhere'))
    os.remove(osp.join(root, 'VG-SGG-dicts-with-attri.json'))
    os.makedirs(tmp_path / 'glove')
    (tmp_path / 'glove' / 'glove.6B.50d.txt').write_text('the 0.1\n')
    os.makedirs(tmp_path / 'ckpt')
    (tmp_path / 'ckpt' / 'det.pth').write_text('model_final.pth\n')
    got = problems(vg_config(root, str(tmp_path / 'glove'), str(tmp_path / 'ckpt' / 'det.pth')))
    dicts = got['train_dataloader.dataset.dict_file']
    assert dicts.path == osp.join(root, 'VG-SGG-dicts-with-attri.json')
    assert 'not found' in dicts.what and 'datasets/vg/VG-SGG-dicts-with-attri.json' in dicts.fix
    images = got['train_dataloader.dataset.image_file']
    assert 'none of the first' in images.what and 'images.zip' in images.what
    assert 'glove.6B.200d.txt' in got['model.relation_head.predictor.glove_dir'].what
    assert 'a text file, not a checkpoint' in got['model.detector_checkpoint'].what
    assert 'zeroshot_triplet.pytorch' in got['val_evaluator.zeroshot_triplets'].fix

    # everything in place: nothing to report
    write_vg(root, random_images(np.random.default_rng(0), 6))
    (tmp_path / 'glove' / 'glove.6B.200d.txt').write_text('the ' + ' '.join(['0.1'] * 200))
    torch.save(dict(state_dict={'backbone.conv1.weight': torch.zeros(1)}),
               str(tmp_path / 'ckpt' / 'det.pth'))
    torch.save(torch.zeros(3, 3, dtype=torch.long), osp.join(root, 'zeroshot_triplet.pytorch'))
    assert problems(vg_config(root, str(tmp_path / 'glove'),
                              str(tmp_path / 'ckpt' / 'det.pth'))) == {}
    # tools/test.py evaluates a trained checkpoint, which holds the detector and the word
    # vectors: neither is needed then
    os.remove(tmp_path / 'ckpt' / 'det.pth')
    os.remove(tmp_path / 'glove' / 'glove.6B.200d.txt')
    cfg = vg_config(root, str(tmp_path / 'glove'), str(tmp_path / 'ckpt' / 'det.pth'))
    assert problems(cfg, mode='test') == {}
    assert set(problems(cfg)) == {'model.detector_checkpoint',
                                  'model.relation_head.predictor.glove_dir'}
    # an override is what gets checked, not the config's top-level variables
    cfg = vg_config(root, str(tmp_path / 'glove'), str(tmp_path / 'ckpt' / 'det.pth'))
    assert cfg.detector_checkpoint != cfg.model.detector_checkpoint
    assert cfg.glove_dir != cfg.model.relation_head.predictor.glove_dir


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    from ovkit.shapes import make_shapes
    ws = tmp_path_factory.mktemp('sgg_inputs')
    make_shapes(str(ws / 'data' / 'shapes'), seed=0, kinds=['vg150'],
                options=dict(vg150=dict(num_train=24, num_test=8)))
    return ws


@pytest.mark.e2e
def test_launcher_stops_before_torchrun_on_a_missing_detector(shapes):
    """SGDet before the tiny detector was trained: dist_train.sh's preflight prints one
    ``error:`` line (key, path, fix) and no process starts."""
    cfg = osp.join(CFG, 'motifs_r18-fpn-tiny_sgdet_shapes-vg150.py')
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), cfg, '2'],
                          cwd=shapes, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHON=sys.executable))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    errors = [ln for ln in out.splitlines() if ln.startswith('error:')]
    assert len(errors) == 1, out
    assert 'model.detector_checkpoint' in errors[0]
    assert 'work_dirs/faster-rcnn_r18-fpn-tiny_shapes-vg150/iter_400.pth' in errors[0]
    assert 'tools/dist_train.sh configs/sgg/faster-rcnn_r18-fpn-tiny_shapes-vg150.py 2' \
        in errors[0]
    assert 'world size' not in out and 'torchrun' not in out.lower().replace('before', '')


@pytest.mark.e2e
def test_a_corrupt_training_image_is_skipped_and_counted(shapes):
    root = shapes / 'data' / 'shapes' / 'vg150'
    from ovkit.sgg.dataset import VGSGGDataset
    ds = VGSGGDataset(data_root=str(root), split='train', num_val_im=16, serialize_data=False)
    per_epoch = -(-len(ds) // 2)                                 # batches of 2 (the config)
    names = sorted({osp.basename(ds.get_data_info(i)['img_path']) for i in range(len(ds))})
    bad = root / 'VG_100K' / names[0]
    bad.write_bytes(b'\xff\xd8\xff' + bytes(range(256)) * 4)     # a truncated JPEG
    work = shapes / 'work_dirs' / 'skips'
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'train.py'),
                   osp.join(CFG, 'motifs_r18-fpn-tiny_predcls_shapes-vg150.py'),
                   '--work-dir', str(work), '--cfg-options',
                   # one epoch (the skip log comes at its end)
                   f'train_cfg.max_iters={per_epoch}', 'val_cfg=None', 'val_dataloader=None',
                   'val_evaluator=None',
                   'default_hooks.bad_samples.max_skip_ratio=0.5',
                   'default_hooks.checkpoint.interval=1000'], cwd=shapes)
    skipped = [ln for ln in out.splitlines() if 'training samples this epoch' in ln]
    assert skipped and f'data/shapes/vg150/VG_100K/{names[0]}' in skipped[0], out[-3000:]
    assert 'skipped 1 of ' in skipped[0] and 'failed to load image' in skipped[0]
    assert f'Iter(train) [{per_epoch}/{per_epoch}]' in out
