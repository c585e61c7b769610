"""A tiny CLIP that knows the shapes: contrastive training on shape crops with prompt captions.

A randomly initialised CLIP cannot know what a "star" is, so an open-vocabulary detector
distilled from it has nothing to learn about novel classes. Real CLIP knows novel COCO classes
because web pre-training covered them; this trainer gives the tiny CLIP the same kind of
knowledge of *every* shape class (base and novel): crops of synthetic scenes drawn with
:mod:`ovkit.shapes`, each captioned with a prompt template filled with the name of the shape it
is centred on (``'There is a star in the scene.'``). Then a detector trained on base-class boxes
only can learn the novel classes from it, as BARON does from CLIP.

    python tools/data/train_shapes_clip.py --out-dir data/shapes/clip --seed 0

writes ``shapes_clip_seed0.pth`` (an open_clip state dict of the ``'tiny'`` architecture, read by
``ovkit.clip.build_clip(dict(model_name='tiny', checkpoint=...))``) and ``shapes_clip_seed0.json``
(the training settings and the zero-shot accuracy on held-out crops, base and novel classes
apart). A second run with the same seed and settings reuses them (``--force`` retrains).

Design choices (this is ovkit's own stand-in for web pre-training, not a published recipe):

* the architecture is open_clip's ``CLIP`` with ovkit's ``'tiny'`` dimensions and QuickGELU; it is
  trained through :class:`ovkit.clip.CLIPModel`'s encoders (the same code BARON runs it with;
  texts cut after their longest caption, exact under the causal mask);
* half of the shapes are drawn in their class colour of ``ovkit.shapes`` (as in the detection
  images), half in a random colour, so colour alone cannot name a shape;
* 15% of the crops show no shape, captioned with "background" in the templates: real CLIP
  knows what an empty wall looks like, and without it the tiny CLIP maps empty crops next to
  the shapes (nearest to star and ring), which a distilled detector then learns;
* captions repeat (9 concepts x the templates), so every pair of the batch with the same
  concept is a positive of the symmetric InfoNCE (targets spread uniformly), not a negative.
"""
import argparse
import json
import math
import os
import os.path as osp
import time
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['make_shape_crops', 'context_box', 'train_shapes_clip', 'zero_shot_accuracy', 'main',
           'TRAIN_DEFAULTS']

# Training settings that define a cached checkpoint (the json stores them; a change retrains).
TRAIN_DEFAULTS = dict(steps=1200, batch_size=128, lr=1e-3, weight_decay=0.1, warmup=100,
                      num_crops=6000, image_size=64, palette_prob=0.5, background_frac=0.15,
                      max_context=3.0)
# The concept of crops without a shape (real CLIP knows "a photo of a wall" too); captions use
# it like a class name. Not a detection class.
BACKGROUND = 'background'



# ------------------------------------------------------------------------------------ data
def _scene(rng, size, classes, palette_prob):
    """A detection-like scene of 1-3 non-overlapping shapes: (PIL image, [(cls, box)])."""
    from PIL import ImageDraw

    from ovkit.shapes.draw import PALETTE, background, draw_shape, place_shapes
    img = background(rng, size)  # the look of the shapes detection images
    draw = ImageDraw.Draw(img)
    objects = []
    for cx, cy, r in place_shapes(rng, size, int(rng.integers(1, 4))):
        cls = int(rng.integers(len(classes)))
        if rng.random() < palette_prob:
            color = np.array(PALETTE[cls % len(PALETTE)]) + rng.integers(-25, 25, 3)
        else:
            color = rng.integers(40, 256, 3)
        color = tuple(int(c) for c in np.clip(color, 0, 255))
        box = draw_shape(draw, classes[cls], cx, cy, r, color)
        objects.append((cls, box))
    return img, objects


def make_shape_crops(num: int, seed: int = 0, crop_size: int = 64, scene_size: int = 128,
                     palette_prob: float = 0.5, classes: Optional[Sequence[str]] = None,
                     background_frac: float = 0.0, max_context: float = 3.0):
    """``num`` crops around one shape each, as the bag teacher sees regions.

    A crop is the shape's box enlarged 1 to ``max_context`` times, the width and height
    independently (a bag's spanned box: the region alone, or with some of its eight neighbours,
    up to about 3x the region on each axis), with the shape anywhere in the middle half of the
    slack, clipped to the scene and resized to a square (as ``roi_align`` stretches a bag), so
    it may show neighbouring shapes too. A ``background_frac`` share of
    the crops (the last ones) shows background only, labelled ``len(classes)``. Returns uint8
    images [num, crop_size, crop_size, 3] (RGB) and class indices [num].
    """
    from PIL import Image

    from ovkit.shapes import SHAPE_CLASSES
    from ovkit.shapes.draw import background
    classes = tuple(classes or SHAPE_CLASSES)
    rng = np.random.default_rng(seed)
    images = np.zeros((num, crop_size, crop_size, 3), np.uint8)
    labels = np.full(num, len(classes), np.int64)
    num_bg = int(round(num * background_frac))
    for k in range(num - num_bg, num):  # a window of an empty scene, as big as a bag may be
        side = float(rng.uniform(0.15, 0.6)) * scene_size
        x, y = (float(v) for v in rng.uniform(0, scene_size - side, size=2))
        crop = background(rng, scene_size).crop((int(x), int(y), int(x + side), int(y + side)))
        images[k] = np.asarray(crop.resize((crop_size, crop_size), Image.BILINEAR))
    num -= num_bg
    k = 0
    while k < num:
        scene, objects = _scene(rng, scene_size, classes, palette_prob)
        for cls, (x1, y1, x2, y2) in objects:
            if k == num:
                break
            box = context_box(rng, (x1, y1, x2, y2), max_context, scene_size)
            crop = scene.crop(tuple(int(round(v)) for v in box))
            images[k] = np.asarray(crop.resize((crop_size, crop_size), Image.BILINEAR))
            labels[k] = cls
            k += 1
    return images, labels


def context_box(rng, box, max_context, scene_size):
    """A crop window around ``box`` (x1, y1, x2, y2), as a bag's spanned box holds a region.

    Width and height are the box's times independent factors in [1, ``max_context``]; the box
    sits in the middle half of the slack on each axis, so the window contains it; the window
    is clipped to the ``scene_size`` square.
    """
    x1, y1, x2, y2 = box
    w, h = (x2 - x1) * rng.uniform(1.0, max_context), (y2 - y1) * rng.uniform(1.0, max_context)
    cx = (x1 + x2) / 2 + rng.uniform(-0.25, 0.25) * (w - (x2 - x1))
    cy = (y1 + y2) / 2 + rng.uniform(-0.25, 0.25) * (h - (y2 - y1))
    return [max(0.0, cx - w / 2), max(0.0, cy - h / 2),
            min(float(scene_size), cx + w / 2), min(float(scene_size), cy + h / 2)]


def _to_clip_input(images: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> CLIP-normalised float [N, 3, H, W]."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return (x - mean) / std


# ------------------------------------------------------------------------------------ training
def _contrastive_loss(image_feats, text_feats, labels, logit_scale):
    """Symmetric InfoNCE where every same-class pair is a positive (uniform soft targets)."""
    logits = logit_scale * image_feats @ text_feats.t()
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (torch.sum(-targets * F.log_softmax(logits, 1), 1).mean()
                  + torch.sum(-targets * F.log_softmax(logits.t(), 1), 1).mean())


def train_shapes_clip(seed: int = 0, steps: int = TRAIN_DEFAULTS['steps'],
                      batch_size: int = TRAIN_DEFAULTS['batch_size'],
                      lr: float = TRAIN_DEFAULTS['lr'],
                      weight_decay: float = TRAIN_DEFAULTS['weight_decay'],
                      warmup: int = TRAIN_DEFAULTS['warmup'],
                      num_crops: int = TRAIN_DEFAULTS['num_crops'],
                      image_size: int = TRAIN_DEFAULTS['image_size'],
                      palette_prob: float = TRAIN_DEFAULTS['palette_prob'],
                      background_frac: float = TRAIN_DEFAULTS['background_frac'],
                      max_context: float = TRAIN_DEFAULTS['max_context'],
                      templates: Optional[Sequence[str]] = None, log=print):
    """Train the tiny CLIP; returns the open_clip ``CLIP`` module (trained, in eval mode).

    Every class of ``ovkit.shapes.SHAPE_CLASSES`` is in the captions, novel ones included.
    """
    from ovkit.shapes import SHAPE_CLASSES

    from .builder import _create_architecture
    from .model import CLIPModel
    from .prompts import format_prompt, load_prompt_templates

    templates = list(templates or load_prompt_templates(_default_templates()))
    model = _create_architecture('tiny', True, seed)
    if model.visual.image_size[0] != image_size:
        raise ValueError(f"image_size={image_size} but the 'tiny' CLIP takes "
                         f'{model.visual.image_size[0]}-pixel crops.')
    images, labels = make_shape_crops(num_crops, seed=seed * 1000 + 1, crop_size=image_size,
                                      palette_prob=palette_prob,
                                      background_frac=background_frac,
                                      max_context=max_context)
    # CLIPModel freezes what it wraps; here the weights are trained through its encoders
    clip = CLIPModel(model, model_name='tiny')
    model.requires_grad_(True)
    inputs = _to_clip_input(images, clip.image_mean, clip.image_std)
    labels = torch.from_numpy(labels)
    # every (class, template) caption, tokenized once
    concepts = tuple(SHAPE_CLASSES) + (BACKGROUND,)
    captions = clip.tokenize([format_prompt(t, c) for c in concepts for t in templates])
    captions = captions.view(len(concepts), len(templates), -1)
    # Train only the token-embedding rows the captions use (about 200 of 49408): the other rows
    # get no gradient, so AdamW leaves them as they are, and updating all of them every step
    # took a fifth of the step. Same rows, same updates; written back after training. Ids keep
    # their order, so the end-of-text token is still the largest (encode_text finds it so).
    full_embedding = model.token_embedding
    used = torch.unique(captions)
    captions = torch.searchsorted(used, captions)
    model.token_embedding = nn.Embedding.from_pretrained(full_embedding.weight.data[used].clone(),
                                                         freeze=False)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and 'embedding' not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2
                                                              and 'embedding' not in n)]
    optim = torch.optim.AdamW([dict(params=decay, weight_decay=weight_decay),
                               dict(params=no_decay, weight_decay=0.0)], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5
                                              * (1 + math.cos(math.pi * s / steps)))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(len(inputs), (batch_size,), generator=gen)
        x = inputs[idx]
        flip = torch.rand(batch_size, generator=gen) < 0.5  # every shape is mirror-symmetric
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = labels[idx]
        tpl = torch.randint(len(templates), (batch_size,), generator=gen)
        text = captions[y, tpl]
        img_f = clip.encode_image(x, normalize=True)
        txt_f = clip.encode_text(text, normalize=True)
        loss = _contrastive_loss(img_f, txt_f, y, model.logit_scale.exp().clamp(max=100))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        if log and (step % 100 == 0 or step == steps - 1):
            log(f'step {step + 1}/{steps} loss {loss.item():.3f} '
                f'({time.time() - t0:.0f} s)')
    full_embedding.weight.data[used] = model.token_embedding.weight.data
    model.token_embedding = full_embedding
    model.requires_grad_(False)
    model.eval()
    return model


def _default_templates():
    from ovkit.metadata import metadata_path
    return metadata_path('prompt_templates.txt')


@torch.no_grad()
def zero_shot_accuracy(clip, images: np.ndarray, labels: np.ndarray,
                       class_names: Sequence[str], templates: Sequence[str],
                       novel: Sequence[str] = ()) -> Dict[str, float]:
    """Top-1 accuracy of ``clip`` (an ``ovkit.clip.CLIPModel``) classifying ``images`` (uint8
    [N, H, W, 3]) among ``class_names`` by the prompt-ensemble embeddings; overall, on base
    and on ``novel`` classes."""
    from .prompts import build_class_embeddings
    emb = build_class_embeddings(clip, list(class_names), list(templates))
    feats = clip.encode_image(_to_clip_input(images, clip.image_mean, clip.image_std))
    pred = (feats @ emb.t()).argmax(1).numpy()
    novel_ids = [i for i, c in enumerate(class_names) if c in set(novel)]
    is_novel = np.isin(labels, novel_ids)
    out = dict(all=float((pred == labels).mean()))
    if is_novel.any():
        out['novel'] = float((pred == labels)[is_novel].mean())
    if (~is_novel).any():
        out['base'] = float((pred == labels)[~is_novel].mean())
    return out


# ------------------------------------------------------------------------------------ CLI
def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Train the tiny shapes CLIP (cached by seed and settings).')
    parser.add_argument('--out-dir', default=osp.join('data', 'shapes', 'clip'))
    parser.add_argument('--seed', type=int, default=0)
    for key, value in TRAIN_DEFAULTS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument('--eval-crops', type=int, default=800,
                        help='held-out crops per colour mode for the zero-shot accuracy')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--force', action='store_true', help='retrain even if cached')
    args = parser.parse_args(argv)
    for key in ('steps', 'batch_size', 'num_crops', 'eval_crops', 'warmup'):
        if getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    if args.max_context < 1:
        parser.error(f'--max-context must be >= 1 (a crop holds the whole shape), got '
                     f'{args.max_context}')
    for key in ('palette_prob', 'background_frac'):
        if not 0 <= getattr(args, key) <= 1:
            parser.error(f"--{key.replace('_', '-')} must lie in [0, 1], got "
                         f'{getattr(args, key)}')
    return args


def main(argv=None):
    """Train (or reuse) the shapes CLIP; print and return its zero-shot accuracy."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ovkit.shapes import NOVEL_CLASSES, SHAPE_CLASSES

    from .builder import build_clip
    from .prompts import load_prompt_templates

    settings = {k: getattr(args, k) for k in TRAIN_DEFAULTS}
    stem = osp.join(args.out_dir, f'shapes_clip_seed{args.seed}')
    ckpt, report = stem + '.pth', stem + '.json'
    cached = None
    if not args.force and osp.isfile(ckpt) and osp.isfile(report):
        with open(report, encoding='utf-8') as f:
            cached = json.load(f)
        if cached.get('settings') != settings or cached.get('seed') != args.seed:
            cached = None
    if cached is not None:
        print(f'shapes CLIP: reusing {ckpt} (seed {args.seed}, same settings; --force to '
              f"retrain): zero-shot accuracy {_fmt(cached['accuracy'])}")
        return dict(checkpoint=ckpt, **cached)

    t0 = time.time()
    model = train_shapes_clip(seed=args.seed, **settings)
    os.makedirs(args.out_dir, exist_ok=True)
    torch.save(model.state_dict(), ckpt)
    train_s = time.time() - t0
    clip = build_clip(dict(model_name='tiny', checkpoint=ckpt))
    templates = load_prompt_templates(_default_templates())
    accuracy = {}
    for mode, prob in (('class_colours', 1.0), ('random_colours', 0.0)):
        images, labels = make_shape_crops(args.eval_crops, seed=args.seed * 1000 + 7,
                                          crop_size=args.image_size, palette_prob=prob,
                                          max_context=args.max_context)
        accuracy[mode] = zero_shot_accuracy(clip, images, labels, SHAPE_CLASSES, templates,
                                            NOVEL_CLASSES)
    result = dict(seed=args.seed, settings=settings, accuracy=accuracy,
                  train_seconds=round(train_s, 1), classes=list(SHAPE_CLASSES),
                  novel=list(NOVEL_CLASSES))
    with open(report, 'w', encoding='utf-8') as f:
        json.dump(result, f, indent=2)
    print(f'shapes CLIP: trained in {train_s:.0f} s -> {ckpt}; zero-shot accuracy on '
          f'held-out crops {_fmt(accuracy)}')
    return dict(checkpoint=ckpt, **result)


def _fmt(accuracy):
    return '; '.join(f'{mode}: ' + ', '.join(f'{k} {v:.3f}' for k, v in acc.items())
                     for mode, acc in accuracy.items())


if __name__ == '__main__':
    main()
