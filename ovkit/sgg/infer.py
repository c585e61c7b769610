"""Scene graphs of your own images: SGDet on a folder (or a list) of images, no annotations.

    python tools/sgg_infer.py CONFIG CKPT IMAGES_DIR_OR_LIST --out DIR \\
        [--box-topk 20] [--rel-topk 20] [--device cpu] [--cfg-options k=v ...]

Writes SGB's two files (``TEST.CUSTUM_EVAL`` of ``engine/inference.py``) into ``DIR``:

- ``custom_data_info.json``: ``idx_to_files`` (the processed images, in order),
  ``ind_to_classes`` (background first) and ``ind_to_predicates`` (background first);
- ``custom_prediction.json``: per image index (a string) ``bbox`` (xyxy in the resized test
  frame, as SGB; ``--original-coords``: original pixels), ``bbox_labels`` (1-based),
  ``bbox_scores`` (sorted, best first), ``rel_pairs`` (indices into the sorted boxes),
  ``rel_labels`` (1-based), ``rel_scores`` and ``rel_all_scores`` (P+1 probabilities), the
  relations sorted by their best foreground predicate probability;

plus, per image, ``<index>_<name>.png`` (the top ``--box-topk`` boxes and the top
``--rel-topk`` relations among them as labelled arrows, with the triplets listed beside the
image) and ``<index>_<name>.txt`` (the same triplets). A folder is read in sorted order; a
list is a JSON list of paths (SGB's format) or a text file with one path per line. An image
that cannot be read is skipped, reported and listed in ``skipped_images.json``; it is never
fatal. The model is built with mmdet's ``init_detector`` and run through its ``test_step``.
"""
import argparse
import json
import os
import os.path as osp
from typing import List, Sequence, Tuple

import numpy as np

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
# annotation steps of a training/test pipeline that custom images have nothing for
_ANNOTATION_STEPS = ('LoadSGGAnnotations', 'LoadAnnotations')
_PACK_STEPS = ('PackSGGInputs', 'PackDetInputs')
META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Scene graph detection (SGDet) on your own images: SGB\'s '
        'custom_data_info.json / custom_prediction.json and one picture per image')
    parser.add_argument('config', help='an SGDet config (model.mode=\'sgdet\')')
    parser.add_argument('checkpoint', help='checkpoint of that config')
    parser.add_argument('images', help='a folder of images, or a list: JSON list of paths or '
                        'a text file with one path per line')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--box-topk', type=int, default=20, help='boxes drawn per image')
    parser.add_argument('--rel-topk', type=int, default=20,
                        help='relations drawn and listed per image (among the drawn boxes)')
    parser.add_argument('--device', default=None, help='cpu, cuda:0, ... (default: cuda:0 '
                        'when available)')
    parser.add_argument('--original-coords', action='store_true',
                        help='write bbox in original image pixels instead of SGB\'s resized '
                        'test frame')
    parser.add_argument('--dict-file', default=None,
                        help='VG-SGG-dicts-with-attri.json for the class / predicate names when '
                        'the checkpoint does not carry them')
    parser.add_argument('--no-vis', action='store_true', help='write the JSON files only')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    return parser.parse_args(argv)


def list_images(source: str) -> Tuple[List[str], List[str]]:
    """Image paths of a folder (sorted) or of a list file, and the folder entries ignored.

    Args:
        source: a folder, a JSON list of paths, or a text file with one path per line
            (relative paths are relative to the list file's folder).
    """
    if osp.isdir(source):
        names = sorted(os.listdir(source))
        paths = [osp.join(source, n) for n in names if osp.isfile(osp.join(source, n))]
        keep = [p for p in paths if p.lower().endswith(IMG_EXTENSIONS)]
        return keep, [p for p in paths if p not in keep]
    if not osp.isfile(source):
        raise FileNotFoundError(f'sgg_infer: IMAGES_DIR_OR_LIST {source!r} is neither a folder '
                                'nor a list file')
    with open(source) as f:
        text = f.read()
    if source.lower().endswith('.json'):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f'sgg_infer: {source} is not valid JSON ({e}); give a JSON list '
                             'of image paths') from None
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise ValueError(f'sgg_infer: {source} must hold a JSON list of image paths')
    else:
        items = [line.strip() for line in text.splitlines() if line.strip()]
    root = osp.dirname(osp.abspath(source))
    return [p if osp.isabs(p) else osp.join(root, p) for p in items], []


def inference_pipeline(cfg):
    """The config's test pipeline without annotation steps, packed by mmdet's
    ``PackDetInputs`` (custom images have no ground truth)."""
    dataset = cfg.test_dataloader.dataset
    while 'pipeline' not in dataset and 'dataset' in dataset:
        dataset = dataset.dataset
    steps = dataset.get('pipeline', cfg.get('test_pipeline'))
    if not steps:
        raise KeyError('sgg_infer: the config has no test_dataloader.dataset.pipeline '
                       '(nor test_pipeline) to resize and pack the images')
    out = []
    for step in steps:
        step = dict(step)
        if step['type'] in _ANNOTATION_STEPS:
            continue
        if step['type'] in _PACK_STEPS:
            step = dict(type='PackDetInputs', meta_keys=META_KEYS)
        out.append(step)
    if out[-1]['type'] != 'PackDetInputs':
        out.append(dict(type='PackDetInputs', meta_keys=META_KEYS))
    return out


def sgb_sorted(scores: Sequence[float]) -> Tuple[List[int], dict]:
    """SGB's ``get_sorted_bbox_mapping``: indices by score, best first (ties: higher index
    first), and old index -> new position."""
    order = [i for _, i in sorted([(s, i) for i, s in enumerate(scores)], reverse=True)]
    return order, {old: new for new, old in enumerate(order)}


def sgb_custom_prediction(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                          pairs: np.ndarray, rel_scores: np.ndarray) -> dict:
    """One image's entry of ``custom_prediction.json`` (SGB ``custom_sgg_post_precessing``).

    Args:
        boxes: [N, 4] xyxy.
        labels: [N] 1-based class indices.
        scores: [N] object scores.
        pairs: [M, 2] indices into the boxes.
        rel_scores: [M, P+1] predicate probabilities, background first.
    """
    box_order, new_index = sgb_sorted(scores.tolist())
    fg = rel_scores[:, 1:] if len(rel_scores) else np.zeros((0, 1))
    rel_order, _ = sgb_sorted(fg.max(1).tolist() if len(fg) else [])
    return dict(
        bbox=[boxes[i].tolist() for i in box_order],
        bbox_labels=[int(labels[i]) for i in box_order],
        bbox_scores=[float(scores[i]) for i in box_order],
        rel_pairs=[[new_index[int(pairs[i, 0])], new_index[int(pairs[i, 1])]]
                   for i in rel_order],
        rel_labels=[int(fg[i].argmax()) + 1 for i in rel_order],
        rel_scores=[float(fg[i].max()) for i in rel_order],
        rel_all_scores=[rel_scores[i].tolist() for i in rel_order])


def top_triplets(pred: dict, classes: Sequence[str], predicates: Sequence[str],
                 box_topk: int, rel_topk: int):
    """The relations among the ``box_topk`` best boxes, first ``rel_topk`` of them, as
    ``(sub, pred, obj, score, text)`` (SGB's visualisation notebook rule)."""
    out = []
    for (s, o), lab, score in zip(pred['rel_pairs'], pred['rel_labels'], pred['rel_scores']):
        if s < box_topk and o < box_topk:
            text = (f"{s}_{classes[pred['bbox_labels'][s]]} => {predicates[lab]} => "
                    f"{o}_{classes[pred['bbox_labels'][o]]}")
            out.append((s, lab, o, score, text))
            if len(out) == rel_topk:
                break
    return out


def draw_scene_graph(img: np.ndarray, boxes: np.ndarray, box_names: Sequence[str],
                     triplets, predicates: Sequence[str], path: str) -> str:
    """Boxes and relation arrows on the image, the triplet list beside it (PNG).

    Args:
        img: [H, W, 3] RGB uint8.
        boxes: [K, 4] the drawn boxes (original pixels), in the JSON's sorted order.
        box_names: their labels ("<index>_<class> <score>").
        triplets: output of :func:`top_triplets`.
        predicates: predicate names, background first.
        path: PNG to write.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    h, w = img.shape[:2]
    img_in = max(6.0, min(12.0, w / 100))
    fig = Figure(figsize=(img_in + 5, max(4.0, img_in * h / w)))
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.0, 0.0, img_in / (img_in + 5), 1.0])
    ax.imshow(img)
    ax.set_axis_off()
    colors = [f'C{i % 10}' for i in range(len(boxes))]
    for i, (box, name) in enumerate(zip(boxes, box_names)):
        x1, y1, x2, y2 = box
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=1.5, ec=colors[i]))
        ax.text(x1, y1, name, fontsize=7, color='white', va='bottom',
                bbox=dict(fc=colors[i], ec='none', pad=1, alpha=0.8))
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 if len(boxes) else boxes
    for s, lab, o, _, _ in triplets:
        ax.annotate('', xy=tuple(centre[o]), xytext=tuple(centre[s]),
                    arrowprops=dict(arrowstyle='-|>', color=colors[s], lw=1.5,
                                    mutation_scale=12))
        mid = (centre[s] + centre[o]) / 2
        ax.text(mid[0], mid[1], predicates[lab], fontsize=6, ha='center', color='black',
                bbox=dict(fc='white', ec=colors[s], pad=1, alpha=0.8))
    tx = fig.add_axes([img_in / (img_in + 5), 0.0, 5 / (img_in + 5), 1.0])
    tx.set_axis_off()
    lines = [f'{t[4]}  ({t[3]:.2f})' for t in triplets] or ['(no relation)']
    tx.text(0.02, 0.98, 'top relations\n' + '\n'.join(lines), va='top', fontsize=7,
            family='monospace', transform=tx.transAxes)
    fig.savefig(path, dpi=100)
    return path


def class_names(model, dict_file=None):
    """(classes, predicates) with '__background__' first, from the checkpoint's dataset_meta
    or from ``--dict-file``."""
    meta = getattr(model, 'dataset_meta', None) or {}
    classes, predicates = meta.get('classes'), meta.get('predicates')
    if dict_file is not None:
        from .dataset import load_vg_dicts
        classes, predicates = load_vg_dicts(dict_file)
    if not classes or not predicates:
        raise KeyError('sgg_infer: the checkpoint carries no dataset_meta with `classes` and '
                       '`predicates` (checkpoints saved by tools/train.py do); pass --dict-file '
                       'VG-SGG-dicts-with-attri.json')
    head = model.relation_head
    if len(classes) != head.num_classes or len(predicates) != head.num_predicates + 1:
        raise ValueError(f'sgg_infer: {len(classes)} classes / {len(predicates)} predicates '
                         f'(incl. background) do not fit the model\'s {head.num_classes} / '
                         f'{head.num_predicates + 1}')
    return ['__background__'] + list(classes), list(predicates)


def main(argv=None):
    args = parse_args(argv)
    import mmcv
    import torch
    from mmcv.transforms import Compose
    from mmdet.apis import init_detector
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import ovkit  # noqa: F401  (ovkit.compat: loading mmengine checkpoints on torch 2.x)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'sgg_infer: checkpoint {args.checkpoint} does not exist')
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    mode = cfg.model.get('mode')
    if mode != 'sgdet':
        raise ValueError(f'sgg_infer runs scene graph detection: {args.config} has '
                         f'model.mode={mode!r}, PredCls/SGCls need ground-truth boxes. Use an '
                         'SGDet config and its checkpoint (SGB allows custom images in SGDet '
                         'only, too).')
    images, ignored = list_images(args.images)
    if not images:
        raise FileNotFoundError(f'sgg_infer: no image ({", ".join(IMG_EXTENSIONS)}) in '
                                f'{args.images}')
    device = args.device or ('cuda:0' if torch.cuda.is_available() else 'cpu')
    cfg.model.detector_checkpoint = None      # the checkpoint holds the detector too
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model = init_detector(cfg, args.checkpoint, palette='random', device=device)
    classes, predicates = class_names(model, args.dict_file)
    pipeline = Compose(inference_pipeline(cfg))
    os.makedirs(args.out, exist_ok=True)

    files, predictions, skipped = [], {}, []
    for path in images:
        try:
            data = pipeline(dict(img_path=path, img_id=len(files)))
        except Exception as e:  # unreadable / corrupt image: listed, never fatal
            skipped.append(dict(file=path, reason=f'{type(e).__name__}: {e}'))
            print(f'sgg_infer: skipped {path}: {type(e).__name__}: {e}', flush=True)
            continue
        with torch.no_grad():
            sample = model.test_step(dict(inputs=[data['inputs']],
                                          data_samples=[data['data_samples']]))[0]
        inst, rels = sample.pred_instances, sample.pred_relations
        boxes = inst.bboxes.cpu().numpy().astype(np.float64)
        frame = boxes
        if not args.original_coords:    # SGB writes boxes in the resized test frame
            sx, sy = sample.metainfo['scale_factor']
            frame = boxes * np.array([sx, sy, sx, sy])
        idx = len(files)
        pred = sgb_custom_prediction(frame, inst.labels.cpu().numpy() + 1,
                                     inst.scores.cpu().numpy(), rels.pairs.cpu().numpy(),
                                     rels.scores.cpu().numpy())
        predictions[str(idx)] = pred
        files.append(path)
        if not args.no_vis:
            triplets = top_triplets(pred, classes, predicates, args.box_topk, args.rel_topk)
            order, _ = sgb_sorted(inst.scores.cpu().tolist())
            shown = boxes[order][:args.box_topk]
            names = [f"{i}_{classes[lab]} {s:.2f}" for i, (lab, s) in enumerate(
                zip(pred['bbox_labels'][:args.box_topk], pred['bbox_scores']))]
            stem = f'{idx}_{osp.splitext(osp.basename(path))[0]}'
            img = mmcv.imread(path, channel_order='rgb')
            draw_scene_graph(img, shown, names, triplets, predicates,
                             osp.join(args.out, stem + '.png'))
            with open(osp.join(args.out, stem + '.txt'), 'w') as f:
                f.write(''.join(f'{t[4]} {t[3]:.4f}\n' for t in triplets))

    with open(osp.join(args.out, 'custom_data_info.json'), 'w') as f:
        json.dump(dict(idx_to_files=files, ind_to_classes=classes,
                       ind_to_predicates=predicates), f)
    with open(osp.join(args.out, 'custom_prediction.json'), 'w') as f:
        json.dump(predictions, f)
    with open(osp.join(args.out, 'skipped_images.json'), 'w') as f:
        json.dump(skipped, f, indent=1)
    print(f'sgg_infer: {len(files)} images -> {osp.join(args.out, "custom_prediction.json")}'
          f'; {len(skipped)} skipped'
          + ''.join(f'\n  skipped: {s["file"]} ({s["reason"]})' for s in skipped)
          + (f'\n  ignored (not an image file): {", ".join(ignored)}' if ignored else ''),
          flush=True)
    if not files:
        raise RuntimeError(f'sgg_infer: none of the {len(images)} images could be read '
                           f'(see {osp.join(args.out, "skipped_images.json")})')
    return dict(files=files, skipped=skipped, out=args.out)
