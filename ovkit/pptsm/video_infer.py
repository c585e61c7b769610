"""Top-k action labels for one video or every video of a folder.

    python tools/video_infer.py CONFIG CHECKPOINT VIDEO_OR_FOLDER [--topk 5]
        [--label-map FILE] [--device cpu] [--cfg-options k=v ...]

Runs the config's ``test_pipeline`` (e.g. 1 clip x centre crop, or 10 clips x 3 crops for the
dense configs) through mmaction2's ``inference_recognizer``. The checkpoint is loaded strictly
(mmaction2's ``init_recognizer`` loads non-strictly: a checkpoint of another class count or
depth would only log a warning and then print labels from random weights); one that does not
fit the config stops the tool with one message naming both and what differs. Class names
come from ``--label-map`` (one name per line, or ``index name`` lines such as UCF101's
classInd.txt), else from the config variable ``class_names``, else from the config variable
``label_map``; without any, classes are printed as numbers.
"""
import argparse
import os
import os.path as osp
import re
import sys

VIDEO_EXTS = ('.avi', '.mp4', '.mkv', '.webm', '.mov', '.m4v', '.mpg', '.mpeg', '.flv')


def read_label_map(path):
    """Class names from a label-map file: ``name`` or ``index name`` per line.

    Args:
        path: text file; UCF101's 1-based ``classInd.txt`` is accepted as it is.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'label map {path!r} does not exist (--label-map / config '
                                'label_map).')
    with open(path) as f:
        lines = [ln.strip() for ln in f if ln.strip()]
    pairs = [ln.split(maxsplit=1) for ln in lines]
    if all(len(p) == 2 and p[0].isdigit() for p in pairs):
        first = min(int(p[0]) for p in pairs)
        names = [None] * len(pairs)
        for idx, name in pairs:
            names[int(idx) - first] = name
        return names
    return lines


def list_videos(path):
    """``path`` itself, or the videos of the folder ``path`` (sorted, not recursive)."""
    if osp.isdir(path):
        vids = sorted(osp.join(path, f) for f in os.listdir(path)
                      if f.lower().endswith(VIDEO_EXTS))
        if not vids:
            raise FileNotFoundError(f'no video ({", ".join(VIDEO_EXTS)}) in folder {path!r}')
        return vids
    if not osp.isfile(path):
        raise FileNotFoundError(f'video {path!r} does not exist')
    return [path]


def class_names_of(cfg, label_map=None):
    """Names from ``--label-map``, the config's ``class_names`` or its ``label_map`` file."""
    if label_map:
        return list(read_label_map(label_map))
    if cfg.get('class_names'):
        return list(cfg.class_names)
    if cfg.get('label_map'):
        return list(read_label_map(cfg.label_map))
    return None


class CheckpointMismatch(ValueError):
    """The checkpoint's weights do not fit the model the config builds."""


def _fit_hints(model, state, meta):
    """What the difference means for PP-TSM: class count, backbone depth."""
    hints = []
    head = state.get('cls_head.fc_cls.weight')
    fc = getattr(getattr(model, 'cls_head', None), 'fc_cls', None)
    if head is not None and fc is not None and head.shape[0] != fc.out_features:
        hints.append(f'the checkpoint classifies {head.shape[0]} classes, the config '
                     f'{fc.out_features} (model.cls_head.num_classes)')
    depth = getattr(getattr(model, 'backbone', None), 'depth', None)
    if depth is not None:
        from .backbone import infer_depth
        theirs = {k[len('backbone.'):]: v for k, v in state.items()
                  if k.startswith('backbone.')}
        found = (meta or {}).get('depth') or infer_depth(theirs)
        if found and found != depth:
            hints.append(f'the checkpoint holds a depth-{found} backbone, the config depth '
                         f'{depth} (model.backbone.depth)')
    return hints


def load_recognizer(cfg, config_path, checkpoint, device='cpu'):
    """Build the config's recognizer and load ``checkpoint`` into it strictly.

    Args:
        cfg: the mmengine ``Config`` (after ``--cfg-options``).
        config_path: the config file, for messages.
        checkpoint: a trained or converted recognizer checkpoint (``.pth``).
        device: where the model runs.

    Raises:
        CheckpointMismatch: missing, unexpected or reshaped weights, named with the config.
    """
    from mmaction.registry import MODELS
    from mmengine.registry import init_default_scope
    from mmengine.runner.checkpoint import _load_checkpoint

    from ovkit.engine.guards import checkpoint_fit_problem

    init_default_scope(cfg.get('default_scope', 'mmaction'))
    backbone = cfg.model.get('backbone')
    if backbone is not None and backbone.get('pretrained'):
        backbone.pretrained = None  # the checkpoint holds every weight
    model = MODELS.build(cfg.model)
    try:
        ckpt = _load_checkpoint(checkpoint, map_location='cpu')
    except Exception as err:  # torch/pickle raise many types on foreign files
        raise CheckpointMismatch(f'checkpoint {checkpoint} cannot be read '
                                 f'({type(err).__name__}: {err})') from err
    problem = checkpoint_fit_problem(model, ckpt)
    if problem:
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else {}
        meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
        hints = _fit_hints(model, state, meta if isinstance(meta, dict) else None)
        raise CheckpointMismatch(
            f'checkpoint {checkpoint} does not fit config {config_path}: '
            f'{"; ".join(hints + [problem])}. Pass the checkpoint trained with this config, '
            'or the config it was trained with.')
    state = ckpt.get('state_dict', ckpt)
    model.load_state_dict({re.sub(r'^module\.', '', k): v for k, v in state.items()},
                          strict=True)
    model.cfg = cfg
    return model.to(device).eval()


def topk_of(scores, names, k):
    """``[(name, probability)]`` of the k best classes for one video's class scores."""
    k = min(k, scores.numel())
    probs, idx = scores.topk(k)
    return [(names[i] if names and i < len(names) else str(i), float(p))
            for p, i in zip(probs.tolist(), idx.tolist())]


def main(argv=None):
    """Command-line entry point (see the module docstring)."""
    from mmengine.config import Config, DictAction
    parser = argparse.ArgumentParser(description='Top-k action labels of videos.')
    parser.add_argument('config', help='model config (e.g. configs/pptsm/...py)')
    parser.add_argument('checkpoint', help='trained or converted checkpoint (.pth)')
    parser.add_argument('video', help='a video file or a folder of videos')
    parser.add_argument('--topk', type=int, default=5)
    parser.add_argument('--label-map', help='class names, one per line or "index name"')
    parser.add_argument('--device', default='cpu', help='cpu or cuda:0')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. model.backbone.pretrained=None')
    args = parser.parse_args(argv)

    import torch
    from mmaction.apis import inference_recognizer

    import ovkit.pptsm  # noqa: F401  (registers PP-TSM; applies ovkit.compat)

    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            sys.exit(f'error: {what} {path!r} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        videos = list_videos(args.video)
        names = class_names_of(cfg, args.label_map)
    except FileNotFoundError as err:
        sys.exit(f'error: {err}')
    try:
        model = load_recognizer(cfg, args.config, args.checkpoint, device=args.device)
    except (CheckpointMismatch, FileNotFoundError, ValueError) as err:
        sys.exit(f'error: {err}')
    to_prob = model.cls_head.average_clips != 'prob'
    failed = 0
    for video in videos:
        try:
            with torch.no_grad():
                result = inference_recognizer(model, video)
        except Exception as err:  # keep going through a folder; report this video
            print(f'{video}: could not be read ({type(err).__name__}: {err})')
            failed += 1
            continue
        scores = result.pred_score.float().cpu()
        if to_prob:
            scores = scores.softmax(-1)
        print(video)
        for rank, (name, p) in enumerate(topk_of(scores, names, args.topk), 1):
            print(f'  {rank}. {name:30s} {p:.4f}')
    if failed:
        sys.exit(f'error: {failed} of {len(videos)} videos could not be read')
    return 0


if __name__ == '__main__':
    main()
