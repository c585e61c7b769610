"""The shapes CLIP trainer: crops, the multi-positive contrastive loss, training, caching,
zero-shot accuracy accounting. The accuracy of a full run is measured by the demo (too slow
for CI); here the training runs a few dozen steps."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ovkit.clip import build_clip
from ovkit.clip.shapes_clip import (
    _contrastive_loss,
    context_box,
    main,
    make_shape_crops,
    train_shapes_clip,
    zero_shot_accuracy,
)
from ovkit.shapes import NOVEL_CLASSES, SHAPE_CLASSES

SMALL = ['--steps', '30', '--batch-size', '32', '--num-crops', '200', '--warmup', '5',
         '--eval-crops', '40', '--threads', '1']


def test_crops_cover_every_class_and_are_deterministic():
    images, labels = make_shape_crops(160, seed=3)
    assert images.shape == (160, 64, 64, 3) and images.dtype == np.uint8
    assert set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))  # novel classes too
    again, labels2 = make_shape_crops(160, seed=3)
    assert np.array_equal(images, again) and np.array_equal(labels, labels2)
    other, _ = make_shape_crops(160, seed=4)
    assert not np.array_equal(images, other)
    # a crop is centred on its shape: the centre differs from the corners (the background)
    centre = images[:, 28:36, 28:36].reshape(160, -1, 3).mean(1)
    corners = images[:, :4, :4].reshape(160, -1, 3).mean(1)
    assert (np.abs(centre - corners).max(1) > 20).mean() > 0.6


def test_context_box_spans_the_views_of_the_bag_teacher():
    """Crop windows hold the shape's box, from tight (1x) up to max_context x per axis, width
    and height drawn apart (a bag's spanned box is rarely square)."""
    rng = np.random.default_rng(0)
    box = (50.0, 40.0, 70.0, 60.0)
    wins = np.array([context_box(rng, box, 3.0, 1000) for _ in range(2000)])
    assert (wins[:, :2] <= box[:2]).all() and (wins[:, 2:] >= box[2:]).all()
    sw, sh = (wins[:, 2] - wins[:, 0]) / 20, (wins[:, 3] - wins[:, 1]) / 20
    assert sw.min() < 1.05 and sh.min() < 1.05 and sw.max() > 2.9 and sh.max() > 2.9
    assert sw.max() <= 3.0 + 1e-9 and abs(np.corrcoef(sw, sh)[0, 1]) < 0.1
    tight = np.array([context_box(rng, box, 1.0, 1000) for _ in range(10)])
    assert np.allclose(tight, box)
    clipped = context_box(rng, (0.0, 0.0, 20.0, 20.0), 3.0, 64)
    assert clipped[0] == 0.0 and clipped[1] == 0.0


def test_contrastive_loss_counts_same_class_pairs_as_positives():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    txt = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    labels = torch.tensor([0, 1, 0, 2, 1])
    loss = _contrastive_loss(img, txt, labels, 10.0)
    logits = 10.0 * img.double() @ txt.double().T
    ref = 0.0
    for mat in (logits, logits.T):
        for i in range(5):
            pos = [j for j in range(5) if labels[j] == labels[i]]
            logp = mat[i] - torch.logsumexp(mat[i], 0)
            ref += -logp[pos].mean() / 5 / 2
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    # distinct labels: CLIP's own loss
    distinct = _contrastive_loss(img, txt, torch.arange(5), 10.0)
    clip_loss = 0.5 * (F.cross_entropy(10.0 * img @ txt.T, torch.arange(5))
                       + F.cross_entropy(10.0 * txt @ img.T, torch.arange(5)))
    assert distinct.item() == pytest.approx(clip_loss.item(), rel=1e-5)


def test_training_lowers_the_loss():
    torch.set_num_threads(1)
    logs = []
    model = train_shapes_clip(seed=0, steps=40, batch_size=32, num_crops=200, warmup=5,
                              log=logs.append)
    losses = [float(line.split('loss ')[1].split()[0]) for line in logs]
    assert len(losses) >= 2 and losses[-1] < losses[0] - 0.2, logs
    assert not model.training
    # Only the caption tokens' embedding rows are trained (and written back into the full
    # table); every other row is still the seeded initial one.
    from ovkit.clip.builder import _create_architecture
    from ovkit.clip.model import CLIPModel
    from ovkit.clip.prompts import format_prompt, load_prompt_templates
    from ovkit.clip.shapes_clip import BACKGROUND, _default_templates
    init = _create_architecture('tiny', True, 0).token_embedding.weight
    trained = model.token_embedding.weight
    assert trained.shape == init.shape == (49408, 64)
    clip = CLIPModel(model, model_name='tiny')
    templates = load_prompt_templates(_default_templates())
    used = torch.unique(clip.tokenize([format_prompt(t, c) for c in (*SHAPE_CLASSES, BACKGROUND)
                                       for t in templates]))
    unused = torch.ones(len(init), dtype=torch.bool)
    unused[used] = False
    assert torch.equal(trained[unused], init[unused])
    changed = (trained[used] != init[used]).any(1)
    assert changed[used != 0].all()  # every token the captions contain (0 is padding)


def test_cached_by_seed_and_settings(tmp_path, capsys):
    out = tmp_path / 'clip'
    first = main(['--out-dir', str(out), *SMALL])
    ckpt = out / 'shapes_clip_seed0.pth'
    report = json.loads((out / 'shapes_clip_seed0.json').read_text())
    assert first['checkpoint'] == str(ckpt) and ckpt.is_file()
    for mode in ('class_colours', 'random_colours'):
        acc = report['accuracy'][mode]
        assert set(acc) == {'all', 'base', 'novel'} and all(0 <= v <= 1 for v in acc.values())
    assert report['novel'] == list(NOVEL_CLASSES) and report['settings']['steps'] == 30
    stamp = ckpt.stat().st_mtime_ns
    capsys.readouterr()
    again = main(['--out-dir', str(out), *SMALL])
    assert 'reusing' in capsys.readouterr().out and ckpt.stat().st_mtime_ns == stamp
    assert again['accuracy'] == report['accuracy']
    main(['--out-dir', str(out), *SMALL, '--steps', '31'])  # other settings: retrained
    assert ckpt.stat().st_mtime_ns != stamp
    # the checkpoint is an ordinary tiny CLIP for ovkit.clip
    clip = build_clip(dict(model_name='tiny', checkpoint=str(ckpt)))
    assert clip.encode_image(torch.zeros(1, 3, 64, 64)).shape == (1, 64)


def test_zero_shot_accuracy_accounting():
    clip = build_clip(dict(model_name='tiny', seed=0))
    from ovkit.clip import build_class_embeddings
    templates = ['a photo of a {}.']
    emb = build_class_embeddings(clip, list(SHAPE_CLASSES), templates)
    labels = np.array([0, 1, 6, 7, 7, 2])
    truth = emb[torch.as_tensor(labels)]
    wrong_on_novel = truth.clone()
    wrong_on_novel[3] = emb[0]  # one of the three novel crops misclassified

    class Fixed:
        image_mean, image_std = clip.image_mean, clip.image_std

        def __init__(self, feats):
            self.feats = feats

        def encode_image(self, images):
            return self.feats

        def __getattr__(self, name):
            return getattr(clip, name)

    images = np.zeros((6, 64, 64, 3), np.uint8)
    acc = zero_shot_accuracy(Fixed(truth), images, labels, SHAPE_CLASSES, templates,
                             NOVEL_CLASSES)
    assert acc == dict(all=1.0, novel=1.0, base=1.0)
    acc = zero_shot_accuracy(Fixed(wrong_on_novel), images, labels, SHAPE_CLASSES, templates,
                             NOVEL_CLASSES)
    assert acc['base'] == 1.0 and acc['novel'] == pytest.approx(2 / 3)
    assert acc['all'] == pytest.approx(5 / 6)


def test_bad_flags():
    with pytest.raises(SystemExit):
        main(['--steps', '0'])
    with pytest.raises(SystemExit):
        main(['--palette-prob', '2'])
