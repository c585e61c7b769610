"""Predict the class of single images with a trained mmpretrain classifier.

``python tools/predict.py CONFIG CKPT IMAGE [IMAGES...] [--topk 5] [--show-dir DIR]``

Each image goes through exactly the config's ``test_dataloader.dataset.pipeline`` (loading
included) and the model's data preprocessor (mean/std, BGR->RGB), the path ``tools/test.py``
takes; the model is built as the Runner builds it (:func:`ovkit.vit.build.build_model`: a
top-level ``data_preprocessor`` joins the model), so the normalisation used in training
cannot be forgotten. An unreadable image is named in a one-line error (and skipped when
several are given); a checkpoint of another class count is explained. Class names come from the
checkpoint (``meta.dataset_meta``, written by the training run from the image folder).
mmpretrain's ``ImageClassificationInferencer`` is not used because it swaps the config's image
loading for its own and loads checkpoints non-strictly (a wrong file would predict noise).
"""
import argparse
import json
import os.path as osp
import sys
from typing import List, Optional, Sequence

import torch

from .build import build_model


class PredictError(ValueError):
    """A config, checkpoint or image that predict cannot use; the message names the file."""


class ImageReadError(PredictError):
    """An image file that does not exist or cannot be decoded."""


def _shown(names, n=8) -> str:
    names = list(names)
    return ', '.join(map(str, names[:n])) + (f', ... ({len(names)} in all)' if len(names) > n
                                             else '')


def _check_fits(model, ckpt, checkpoint, config, cfg, ckpt_classes):
    """Explain a checkpoint whose tensors do not fit the config's model (e.g. another folder's
    class count) before mmengine's strict load reports a bare size mismatch."""
    state = ckpt.get('state_dict', ckpt)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    own = model.state_dict()
    bad = {k: (tuple(v.shape), tuple(own[k].shape)) for k, v in state.items()
           if k in own and hasattr(v, 'shape') and tuple(v.shape) != tuple(own[k].shape)}
    if not bad:
        return
    num_classes = getattr(getattr(model, 'head', None), 'num_classes', None)
    head_rows = {file[0] for k, (file, _) in bad.items() if k.startswith('head.')}
    if num_classes is not None and len(head_rows) == 1:
        trained = head_rows.pop()
        have = (f' (dataset_meta classes: {_shown(ckpt_classes)})' if ckpt_classes else '')
        cfg_classes = cfg.get('classes') or cfg.get('test_dataloader', {}).get(
            'dataset', {}).get('classes')
        where = (f' (classes {_shown(cfg_classes)} from data_root = {cfg.get("data_root")!r})'
                 if cfg_classes else '')
        raise PredictError(
            f'CKPT {checkpoint!r} was trained on {trained} classes{have}, but the model of '
            f'CONFIG {config!r} has model.head.num_classes = {num_classes}{where}. Predict with '
            'the config (and data_root) the checkpoint was trained with; an image-folder config '
            'whose data_root folder is absent takes the classes from the checkpoint.')
    shown = '; '.join(f'{k}: file {f} vs model {m}' for k, (f, m) in list(bad.items())[:4])
    raise PredictError(f'CKPT {checkpoint!r} does not fit the model of CONFIG {config!r}: '
                       f'{shown}. Use the config the checkpoint was trained with.')


def load_classifier(config: str, checkpoint: str, device: str = 'cpu', cfg_options=None):
    """Build the config's model as the Runner does, load ``checkpoint`` strictly; return
    (model, cfg, classes).

    Args:
        config: config file.
        checkpoint: checkpoint written by training (or tools/model_converters/vit.py).
        device: torch device.
        cfg_options: ``--cfg-options`` style overrides.
    """
    from mmengine.config import Config
    from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model
    for path, what in ((config, 'CONFIG'), (checkpoint, 'CKPT')):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} {path!r} does not exist')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    try:
        ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    except Exception as e:  # pickle/zip errors name no file
        raise PredictError(f'CKPT {checkpoint!r} could not be read as a checkpoint '
                           f'({type(e).__name__}: {e})') from e
    if not isinstance(ckpt, dict):
        raise PredictError(f'CKPT {checkpoint!r} holds a {type(ckpt).__name__}, not a '
                           'checkpoint dict (state_dict + meta)')
    meta = ckpt.get('meta') or {}
    ckpt_classes = (meta.get('dataset_meta') or {}).get('classes')
    classes = ckpt_classes
    if classes is None:
        classes = cfg.get('test_dataloader', {}).get('dataset', {}).get('classes')
    head = cfg.model.get('head') or {}
    if head.get('num_classes', 0) is None and classes:
        # an image-folder config read where the training folder is absent: the checkpoint
        # knows the classes, so predicting needs no data
        head['num_classes'] = len(classes)
    # the Runner's way: a top-level data_preprocessor (ImageNet configs) joins the model
    model = build_model(cfg)
    _check_fits(model, ckpt, checkpoint, config, cfg, ckpt_classes)
    try:
        _load_checkpoint_to_model(model, ckpt, strict=True)
    except RuntimeError as e:
        raise PredictError(f'CKPT {checkpoint!r} does not fit the model of CONFIG {config!r}: '
                           f'{e}') from e
    return model.to(device).eval(), cfg, (tuple(classes) if classes else None)


def _decodes(path: str) -> bool:
    import mmcv
    try:
        with open(path, 'rb') as f:
            return mmcv.imfrombytes(f.read()) is not None
    except Exception:
        return False


def load_image(pipeline, path: str) -> dict:
    """Run the test pipeline on one file; an unreadable file raises :class:`ImageReadError`.

    mmcv's loader reports a corrupt file as a bare ``AssertionError``; an image that decodes
    but fails in the pipeline is the config's fault and is re-raised unchanged.

    Args:
        pipeline: the composed test pipeline (loading first).
        path: image file.
    """
    if not osp.isfile(path):
        raise ImageReadError(f'IMAGE {path!r} does not exist')
    try:
        return pipeline(dict(img_path=path))
    except Exception:
        if _decodes(path):
            raise
        raise ImageReadError(
            f'IMAGE {path!r} is not a readable image ({osp.getsize(path)} bytes that OpenCV '
            'cannot decode: truncated, corrupt or not an image)') from None


def predict(model, cfg, images: Sequence[str], classes=None, topk: int = 5,
            show_dir: Optional[str] = None, skip_unreadable: bool = False) -> List[dict]:
    """Top-k classes and probabilities of each image.

    Args:
        model: classifier from :func:`load_classifier`.
        cfg: its config (the test pipeline is read from it).
        images: image files.
        classes: class names (None: indices).
        topk: how many classes to return per image.
        show_dir: write each image with its predicted label here (None: no drawing).
        skip_unreadable: an unreadable image gives ``dict(image=, error=)`` instead of raising.
    """
    from mmengine.dataset import Compose, pseudo_collate
    from mmpretrain.registry import TRANSFORMS
    pipeline_cfg = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline')
    if not pipeline_cfg:
        raise PredictError('the config has no test_dataloader.dataset.pipeline to preprocess '
                           'with')
    pipeline = Compose([TRANSFORMS.build(t) for t in pipeline_cfg])
    results = []
    for path in images:
        try:
            data = load_image(pipeline, path)
        except ImageReadError as e:
            if not skip_unreadable:
                raise
            results.append(dict(image=path, error=str(e)))
            continue
        with torch.no_grad():
            sample = model.test_step(pseudo_collate([data]))[0]
        scores = sample.pred_score.float().cpu()
        k = min(topk, scores.numel())
        probs, labels = scores.topk(k)
        top = [dict(label=int(i), name=classes[i] if classes else str(int(i)), prob=float(p))
               for p, i in zip(probs, labels)]
        results.append(dict(image=path, topk=top))
        if show_dir:
            _draw(path, sample, classes, show_dir)
    return results


def _draw(path, sample, classes, show_dir):
    import mmcv
    from mmengine.utils import mkdir_or_exist
    from mmpretrain.visualization import UniversalVisualizer
    mkdir_or_exist(show_dir)
    image = mmcv.imread(path, channel_order='rgb')
    # <class folder>_<name>: image folders repeat file names across classes (val/a/0.png...)
    parent = osp.basename(osp.dirname(osp.abspath(path)))
    out = osp.join(show_dir, f'{parent}_{osp.splitext(osp.basename(path))[0]}_pred.png')
    # small images are enlarged so that the label text stays readable
    resize = 256 if min(image.shape[:2]) < 256 else None
    UniversalVisualizer().visualize_cls(image, sample, classes=classes, resize=resize,
                                        draw_gt=False, draw_pred=True, draw_score=True,
                                        out_file=out)


def main(argv=None):
    """Print the top-k classes of each image; exit status 1 when an image was skipped.

    Args:
        argv: command-line arguments (None: ``sys.argv``).
    """
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Top-k classes of images (test pipeline).')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('images', nargs='+', metavar='IMAGE',
                        help='image files; with several, an unreadable one is reported and '
                        'skipped')
    parser.add_argument('--topk', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--show-dir', default=None, help='draw each image with its label here')
    parser.add_argument('--out', default=None, help='also write the results as JSON')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    args = parser.parse_args(argv)
    import ovkit  # noqa: F401  (compat fixes before any mm import)
    try:
        model, cfg, classes = load_classifier(args.config, args.checkpoint, args.device,
                                              args.cfg_options)
        results = predict(model, cfg, args.images, classes, args.topk, args.show_dir,
                          skip_unreadable=len(args.images) > 1)
    except (PredictError, FileNotFoundError) as e:
        parser.exit(1, f'{parser.prog}: error: {e}\n')
    for r in results:
        if 'error' in r:
            print(f'{parser.prog}: error: {r["error"]}; skipped', file=sys.stderr)
            continue
        print(r['image'])
        for rank, t in enumerate(r['topk'], 1):
            print(f'  {rank}. {t["name"]:<20} {t["prob"]:.4f}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    skipped = sum('error' in r for r in results)
    if skipped:
        parser.exit(1, f'{parser.prog}: {skipped} of {len(results)} images skipped\n')
    return results


if __name__ == '__main__':
    main()
