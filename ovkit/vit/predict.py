"""Predict the class of single images with a trained mmpretrain classifier.

``python tools/predict.py CONFIG CKPT IMAGE [IMAGES...] [--topk 5] [--show-dir DIR]``

Each image goes through exactly the config's ``test_dataloader.dataset.pipeline`` (loading
included) and the model's own data preprocessor (mean/std, BGR->RGB), the path ``tools/test.py``
takes; so the normalisation used in training cannot be forgotten. Class names come from the
checkpoint (``meta.dataset_meta``, written by the training run from the image folder).
mmpretrain's ``ImageClassificationInferencer`` is not used because it swaps the config's image
loading for its own and loads checkpoints non-strictly (a wrong file would predict noise).
"""
import argparse
import json
import os.path as osp
from typing import List, Optional, Sequence

import torch


def load_classifier(config: str, checkpoint: str, device: str = 'cpu', cfg_options=None):
    """Build the config's model, load ``checkpoint`` strictly; return (model, cfg, classes).

    Args:
        config: config file.
        checkpoint: checkpoint written by training (or tools/model_converters/vit.py).
        device: torch device.
        cfg_options: ``--cfg-options`` style overrides.
    """
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner.checkpoint import _load_checkpoint, _load_checkpoint_to_model
    for path, what in ((config, 'CONFIG'), (checkpoint, 'CKPT')):
        if not osp.isfile(path):
            raise FileNotFoundError(f'{what} {path!r} does not exist')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    meta = ckpt.get('meta', {}) if isinstance(ckpt, dict) else {}
    classes = (meta.get('dataset_meta') or {}).get('classes')
    if classes is None:
        classes = cfg.get('test_dataloader', {}).get('dataset', {}).get('classes')
    head = cfg.model.get('head') or {}
    if head.get('num_classes', 0) is None and classes:
        # an image-folder config read where the training folder is absent: the checkpoint
        # knows the classes, so predicting needs no data
        head['num_classes'] = len(classes)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    from mmpretrain.registry import MODELS
    model = MODELS.build(cfg.model)
    _load_checkpoint_to_model(model, ckpt, strict=True)
    return model.to(device).eval(), cfg, (tuple(classes) if classes else None)


def predict(model, cfg, images: Sequence[str], classes=None, topk: int = 5,
            show_dir: Optional[str] = None) -> List[dict]:
    """Top-k classes and probabilities of each image.

    Args:
        model: classifier from :func:`load_classifier`.
        cfg: its config (the test pipeline is read from it).
        images: image files.
        classes: class names (None: indices).
        topk: how many classes to return per image.
        show_dir: write each image with its predicted label here (None: no drawing).
    """
    from mmengine.dataset import Compose, pseudo_collate
    from mmpretrain.registry import TRANSFORMS
    pipeline_cfg = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline')
    if not pipeline_cfg:
        raise ValueError('the config has no test_dataloader.dataset.pipeline to preprocess with')
    pipeline = Compose([TRANSFORMS.build(t) for t in pipeline_cfg])
    results = []
    for path in images:
        if not osp.isfile(path):
            raise FileNotFoundError(f'IMAGE {path!r} does not exist')
        data = pipeline(dict(img_path=path))
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
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='Top-k classes of images (test pipeline).')
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('images', nargs='+', metavar='IMAGE')
    parser.add_argument('--topk', type=int, default=5)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--show-dir', default=None, help='draw each image with its label here')
    parser.add_argument('--out', default=None, help='also write the results as JSON')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default=None)
    args = parser.parse_args(argv)
    import ovkit  # noqa: F401  (compat fixes before any mm import)
    model, cfg, classes = load_classifier(args.config, args.checkpoint, args.device,
                                          args.cfg_options)
    results = predict(model, cfg, args.images, classes, args.topk, args.show_dir)
    for r in results:
        print(r['image'])
        for rank, t in enumerate(r['topk'], 1):
            print(f'  {rank}. {t["name"]:<20} {t["prob"]:.4f}')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == '__main__':
    main()
