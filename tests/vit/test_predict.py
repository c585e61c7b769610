"""predict.py against mmengine's Runner on configs whose data_preprocessor is top-level (the
ImageNet ones), and its errors: unreadable images, checkpoints of another class count."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from tests.conftest import REPO, experiment_name

from .common import perturb, single_thread

IMAGENET_CFGS = ['vit-base-p16_64xb64_in1k.py', 'vit-base-p16_augreg-in21k-ft_in1k.py']
NANO_CFG = osp.join(REPO, 'configs', 'vit', 'vit-nano-p8_40e_shapes-imagefolder.py')


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    with single_thread():
        yield


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    """ImageNet's val layout (val/*.JPEG + meta/val.txt), as mmpretrain's ImageNet reads it."""
    root = tmp_path_factory.mktemp('imagenet')
    (root / 'val').mkdir()
    (root / 'meta').mkdir()
    rng = np.random.default_rng(0)
    names = []
    for k, (h, w) in enumerate([(260, 300), (320, 256), (240, 240)]):
        # a colour cast per image (red/blue differ) so a BGR/RGB or mean/std slip shows
        img = rng.integers(0, 256, (h, w, 3)).astype(np.float64) * [0.3, 0.7, 1.0] + [150, 40, 0]
        names.append(f'ILSVRC2012_val_{k:08d}.JPEG')
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / 'val' / names[-1],
                                                                     format='JPEG')
    (root / 'meta' / 'val.txt').write_text(''.join(f'{n} {k}\n' for k, n in enumerate(names)))
    return root


def tiny_child(tmp_path, base, data_root):
    """The real config with a 1-block, 32-wide ViT: everything else (the top-level
    data_preprocessor, the test pipeline, the dataset) is the config's own."""
    path = tmp_path / f'tiny_{base}'
    path.write_text(f'''_base_ = [{osp.join(REPO, 'configs', 'vit', base)!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dim=32, depth=1, num_heads=2),
                  representation_size=None, drop_rate=0., pos_drop_rate=0.),
    head=dict(in_channels=32))
test_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                       dataset=dict(data_root={str(data_root)!r}))
''')
    return str(path)


def synthetic_checkpoint(cfg, path, classes=None, seed=0):
    """Random weights moved off their init, saved as training saves them (meta.dataset_meta)."""
    from ovkit.vit.build import build_model
    model = build_model(cfg)
    model.init_weights()
    perturb(model, seed=seed, std=.2)
    meta = dict(dataset_meta=dict(classes=list(classes))) if classes else {}
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)
    return str(path)


@pytest.mark.parametrize('base', IMAGENET_CFGS)
def test_predict_scores_equal_runner_test_loop(base, imagenet, tmp_path):
    """The Runner merges the top-level data_preprocessor into the model; predict must too."""
    from mmengine.fileio import load
    from mmengine.runner import Runner

    import ovkit.vit  # noqa: F401
    from ovkit.vit.predict import load_classifier, predict
    config = tiny_child(tmp_path, base, imagenet)
    cfg = Config.fromfile(config)
    assert 'data_preprocessor' not in cfg.model and cfg.data_preprocessor.mean
    ckpt = synthetic_checkpoint(cfg, tmp_path / 'tiny.pth')

    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = experiment_name('predict')
    cfg.load_from = ckpt
    cfg.test_evaluator = [dict(type='DumpResults', out_file_path=str(tmp_path / 'dump.pkl'))]
    Runner.from_cfg(cfg).test()
    runner_scores = {osp.basename(r['img_path']): r['pred_score'] for r in load(
        str(tmp_path / 'dump.pkl'))}
    assert len(runner_scores) == 3

    model, pcfg, classes = load_classifier(config, ckpt)
    images = sorted(str(p) for p in (imagenet / 'val').iterdir())
    results = predict(model, pcfg, images, classes, topk=1000)
    for r in results:
        ours = torch.zeros(1000)
        for t in r['topk']:
            ours[t['label']] = t['prob']
        expected = runner_scores[osp.basename(r['image'])]
        assert (ours - expected).abs().max() < 1e-6
    mean = model.data_preprocessor.mean.flatten().tolist()
    assert mean == pytest.approx(cfg.data_preprocessor.mean)  # the top-level one

    # the test can fail: cfg.model alone (no top-level preprocessor) scores differently
    from mmengine.registry import MODELS, DefaultScope
    from mmengine.runner.checkpoint import load_checkpoint
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        raw = MODELS.build(cfg.model).eval()
    load_checkpoint(raw, ckpt)
    assert not raw.data_preprocessor._enable_normalize
    bare = predict(raw, pcfg, images[:1], classes, topk=1)[0]['topk'][0]
    assert abs(bare['prob'] - runner_scores[osp.basename(images[0])][bare['label']]) > 1e-4


@pytest.fixture(scope='module')
def tiny_predictor(imagenet, tmp_path_factory):
    tmp = tmp_path_factory.mktemp('pred')
    config = tiny_child(tmp, IMAGENET_CFGS[1], imagenet)
    ckpt = synthetic_checkpoint(Config.fromfile(config), tmp / 'tiny.pth')
    good = sorted(str(p) for p in (imagenet / 'val').iterdir())[:2]
    truncated = tmp / 'truncated.png'
    Image.new('RGB', (64, 64), (200, 30, 30)).save(tmp / 'whole.png')
    truncated.write_bytes((tmp / 'whole.png').read_bytes()[:60])
    notes = tmp / 'notes.jpg'
    notes.write_text('not an image\n')
    return config, ckpt, good, str(truncated), str(notes)


def test_unreadable_images_are_named_and_skipped(tiny_predictor, capsys):
    from ovkit.vit.predict import main
    config, ckpt, good, truncated, notes = tiny_predictor
    with pytest.raises(SystemExit) as e:
        main([config, ckpt, good[0], truncated, good[1], notes, '--topk', '2'])
    assert e.value.code == 1
    out, err = capsys.readouterr()
    assert out.count('  1. ') == 2 and good[0] in out and good[1] in out  # the others ran
    lines = [x for x in err.splitlines() if 'error' in x]
    assert len(lines) == 2
    assert f"IMAGE {truncated!r} is not a readable image" in lines[0]
    assert lines[0].endswith('skipped') and notes in lines[1]
    assert '2 of 4 images skipped' in err


@pytest.mark.parametrize('which', ['truncated', 'missing'])
def test_one_unreadable_image_is_a_one_line_error(tiny_predictor, capsys, which):
    from ovkit.vit.predict import main
    config, ckpt, _, truncated, _ = tiny_predictor
    image = truncated if which == 'truncated' else truncated + '.absent'
    with pytest.raises(SystemExit) as e:
        main([config, ckpt, image])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert '\n' not in err and 'Traceback' not in err and repr(image) in err
    assert ('not a readable image' if which == 'truncated' else 'does not exist') in err


def test_config_error_is_not_blamed_on_the_image(tiny_predictor):
    """A readable image that the pipeline fails on: the pipeline's own error, unchanged."""
    from ovkit.vit.predict import ImageReadError, load_classifier, predict
    config, ckpt, good, _, _ = tiny_predictor
    model, cfg, classes = load_classifier(config, ckpt)
    cfg.test_dataloader.dataset.pipeline.insert(1, dict(type='CenterCrop', crop_size=-3))
    with pytest.raises(Exception) as e:
        predict(model, cfg, good[:1], classes)
    assert not isinstance(e.value, ImageReadError)


def test_unreadable_checkpoint_names_the_file(tiny_predictor, tmp_path):
    from ovkit.vit.predict import PredictError, load_classifier
    config = tiny_predictor[0]
    bad = tmp_path / 'epoch_3.pth'
    bad.write_bytes(b'\x80\x02garbage')
    with pytest.raises(PredictError, match=f'CKPT {str(bad)!r} could not be read'):
        load_classifier(config, str(bad))


def test_checkpoint_of_another_class_count_explains(tmp_path, monkeypatch):
    """Trained on the 8 shapes classes, predicted with the config read where data_root holds a
    3-class folder: the error names both class lists instead of a bare size mismatch."""
    from ovkit.shapes import SHAPE_CLASSES
    from ovkit.vit.predict import PredictError, load_classifier
    monkeypatch.chdir(tmp_path)  # no data/shapes here: the config's classes are None
    cfg = Config.fromfile(NANO_CFG)
    cfg.model.head.num_classes = 8
    trained = sorted(SHAPE_CLASSES)
    ckpt = synthetic_checkpoint(cfg, tmp_path / 'epoch_12.pth', classes=trained)
    for split in ('train', 'val'):
        for c in ('apple', 'kiwi', 'pear'):
            d = tmp_path / 'data' / 'shapes' / 'imagefolder' / split / c
            d.mkdir(parents=True)
            Image.new('RGB', (8, 8)).save(d / '0.png')
    with pytest.raises(PredictError) as e:
        load_classifier(NANO_CFG, ckpt)
    msg = str(e.value)
    assert "CKPT 'epoch_12.pth'" not in msg and repr(ckpt) in msg
    assert 'trained on 8 classes (dataset_meta classes: circle, cross, diamond' in msg
    assert 'model.head.num_classes = 3' in msg and 'apple, kiwi, pear' in msg
    assert "data_root = 'data/shapes/imagefolder'" in msg
