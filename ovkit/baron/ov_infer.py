"""Open-vocabulary inference: detect the classes you name, with embeddings built on the fly.

    python tools/ov_infer.py CONFIG CKPT INPUTS... (--classes "cat,dog,zebra" | --classes-file F)
        [--out-dir outputs/ov_infer] [--score-thr 0.3] [--device cpu] [--templates FILE]
        [--cfg-options k=v ...]

The config's detector must take a ``vocabulary`` (``Baron`` does): the tool sets
``model.vocabulary`` to the names, so the detector encodes them with its frozen CLIP and the
prompt templates (``model.prompt_templates``, or ``--templates``) and classifies against them
instead of the config's ``cls_embeddings_path``. A checkpoint trained on any class count loads,
because class embeddings are not part of the state dict and box regression is class-agnostic.
The config's ``cls_embeddings_path`` must still exist (the head reads it at build time; see
``tools/data/gen_class_embeddings.py``).

INPUTS are image files or folders (their images, not recursive). For each image the tool writes
``<name>.json`` (image, size, classes, detections with ``bbox`` [x1, y1, x2, y2] in pixels,
``score``, ``label`` (index into the classes) and ``class``) and ``<name>.jpg``/``.png`` drawn with
mmdet's ``DetLocalVisualizer`` into ``--out-dir``, then prints a summary.
"""
import argparse
import json
import os
import os.path as osp
import time
import warnings
from collections import Counter

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def build_parser():
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Open-vocabulary detection with class names given at run time.',
        epilog='Example: python tools/ov_infer.py configs/baron/shapes.py '
               'work_dirs/shapes/iter_40.pth data/shapes/coco/val --classes "circle,zebra,star"')
    parser.add_argument('config', metavar='CONFIG',
                        help='config file (its model must take a vocabulary, e.g. Baron)')
    parser.add_argument('checkpoint', metavar='CKPT', help='checkpoint file (.pth)')
    parser.add_argument('inputs', nargs='+', metavar='INPUTS',
                        help='image files and/or folders of images')
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument('--classes', help='comma-separated class names, e.g. "cat,dog,zebra"')
    group.add_argument('--classes-file', help='text file with one class name per line '
                       '(blank lines and # comments skipped), e.g. coco_80.txt, shipped)')
    parser.add_argument('--out-dir', default=osp.join('outputs', 'ov_infer'),
                        help='where the JSON files and drawn images go (default: outputs/ov_infer)')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='keep (and draw) detections scoring at least this (default: 0.3)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda, cuda:1, ... (default: cuda:0 if available, else cpu)')
    parser.add_argument('--templates', default=None,
                        help="prompt templates file, one per line with '{}' for the name "
                             '(default: the config\'s model.prompt_templates)')
    parser.add_argument('--no-draw', action='store_true', help='write only the JSON files')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (applied before the vocabulary)')
    return parser


# --------------------------------------------------------------------------- argument checks
def parse_class_names(args, parser):
    """The vocabulary from --classes / --classes-file, checked: no empty or repeated names."""
    from ovkit.clip import load_class_names
    from ovkit.clip.prompts import format_prompt
    if args.classes is not None:
        source = '--classes'
        names = [name.strip() for name in args.classes.split(',')]
        empty = [i for i, name in enumerate(names) if not name]
        if empty:
            parser.error(f'--classes {args.classes!r}: class name {empty[0] + 1} of {len(names)} '
                         'is empty; give comma-separated names such as "cat,dog,zebra" (no empty '
                         'entries or trailing comma).')
    else:
        source = '--classes-file'
        path = args.classes_file
        try:
            names = load_class_names(path)
        except (FileNotFoundError, ValueError) as err:
            parser.error(f'--classes-file: {err}')
    # The prompts use the cleaned name ('traffic_light' and 'Traffic light' read the same), so
    # names that clean to the same text would be two labels with one embedding.
    seen = {}
    for name in names:
        key = format_prompt('{}', name)
        if not key:
            parser.error(f'{source}: class name {name!r} is empty once cleaned for the prompts.')
        if key in seen:
            same = '' if seen[key] == name else f' (same as {seen[key]!r} in the prompts)'
            parser.error(f'{source}: class name {name!r} is repeated{same}; each class must '
                         'appear once (its position is its label).')
        seen[key] = name
    return names


def collect_images(inputs, parser):
    """Image files from files and folders, in the given order (folders sorted)."""
    images = []
    for path in inputs:
        if osp.isdir(path):
            found = sorted(osp.join(path, f) for f in os.listdir(path)
                           if f.lower().endswith(IMG_EXTENSIONS)
                           and osp.isfile(osp.join(path, f)))
            if not found:
                parser.error(f"INPUTS: folder '{path}' has no images "
                             f'({", ".join(IMG_EXTENSIONS)}).')
            images += found
        elif osp.isfile(path):
            images.append(path)
        else:
            parser.error(f"INPUTS: image '{path}' not found (absolute: {osp.abspath(path)}).")
    return images


def check_files(args, parser):
    if not osp.isfile(args.config):
        parser.error(f"CONFIG '{args.config}' not found (absolute: {osp.abspath(args.config)}).")
    if not osp.isfile(args.checkpoint):
        parser.error(f"CKPT '{args.checkpoint}' not found (absolute: "
                     f'{osp.abspath(args.checkpoint)}).')
    if args.templates is not None:
        from ovkit.metadata import resolve
        try:
            resolve(args.templates, 'prompt templates')
        except FileNotFoundError as err:
            parser.error(f'--templates: {err}')
    if not 0 <= args.score_thr <= 1:
        parser.error(f'--score-thr {args.score_thr} must be in [0, 1].')


# --------------------------------------------------------------------------- model
def load_config(args, names, parser):
    import inspect

    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_type = cfg.model.get('type')
    model_cls = MODELS.get(model_type) if isinstance(model_type, str) else model_type
    if model_cls is None or 'vocabulary' not in inspect.signature(model_cls).parameters:
        parser.error(f"CONFIG '{args.config}': model type {model_type!r} does not take a "
                     'vocabulary (model.vocabulary); use an open-vocabulary detector such as '
                     'Baron (configs/baron/).')
    cfg.model.vocabulary = list(names)
    if args.templates is not None:
        cfg.model.prompt_templates = args.templates
    # The backbone's ImageNet init is overwritten by the checkpoint; don't read it.
    if 'init_cfg' in cfg.model.get('backbone', {}):
        cfg.model.backbone.init_cfg = None
    return cfg


def palette_for(names, current):
    """The config's palette when it has enough colours, else mmdet's fixed random palette."""
    from mmdet.visualization.palette import get_palette
    if isinstance(current, (list, tuple)) and len(current) >= len(names) and all(
            isinstance(c, (list, tuple)) and len(c) == 3 for c in current):
        return [tuple(int(v) for v in c) for c in current[:len(names)]]
    return [tuple(int(v) for v in c) for c in get_palette('random', len(names))]


def build_model(cfg, args, names):
    from mmdet.apis import init_detector
    device = args.device
    if device is None:
        import torch
        device = 'cuda:0' if torch.cuda.is_available() else 'cpu'
    with warnings.catch_warnings():
        # init_detector warns about COCO class names when a checkpoint has no dataset_meta;
        # the vocabulary replaces them below.
        warnings.filterwarnings('ignore', message='.*COCO classes by default.*')
        model = init_detector(cfg, args.checkpoint, device=device)
    trained_classes = list(model.dataset_meta.get('classes') or ())
    model.dataset_meta = dict(classes=tuple(names),
                              palette=palette_for(names, model.dataset_meta.get('palette')))
    num = model.roi_head.bbox_head.num_classes
    if num != len(names):  # the detector did not take the vocabulary
        raise RuntimeError(f'the model classifies {num} classes after loading, not the '
                           f'{len(names)} given.')
    return model, trained_classes


def build_test_pipeline(cfg):
    """The config's test pipeline without annotation loading (images have no labels here)."""
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg
    pipeline = [t for t in get_test_pipeline_cfg(cfg.copy())
                if 'LoadAnnotations' not in str(t.get('type'))]
    return Compose(pipeline)


def build_visualizer(cfg, model):
    from mmdet.registry import VISUALIZERS
    vis_cfg = dict(cfg.get('visualizer') or dict(type='DetLocalVisualizer'))
    vis_cfg.pop('vis_backends', None)
    vis_cfg.pop('save_dir', None)
    vis_cfg['name'] = f'ov_infer_{time.time_ns()}'  # visualizers are named singletons
    visualizer = VISUALIZERS.build(vis_cfg)
    visualizer.dataset_meta = model.dataset_meta
    return visualizer


# --------------------------------------------------------------------------- outputs
def output_stems(images):
    """One output name per image; repeated file names get _1, _2, ..."""
    stems, seen = [], set()
    for path in images:
        stem = base = osp.splitext(osp.basename(path))[0]
        i = 1
        while stem in seen:
            stem, i = f'{base}_{i}', i + 1
        seen.add(stem)
        stems.append(stem)
    return stems


def to_record(image_path, result, names, score_thr):
    pred = result.pred_instances
    keep = pred.scores >= score_thr
    bboxes = pred.bboxes[keep].cpu().tolist()
    scores = pred.scores[keep].cpu().tolist()
    labels = pred.labels[keep].cpu().tolist()
    height, width = result.ori_shape[:2]
    return dict(
        image=osp.abspath(image_path),
        height=int(height),
        width=int(width),
        classes=list(names),
        score_thr=score_thr,
        detections=[
            dict(bbox=[round(float(v), 2) for v in box], score=round(float(score), 5),
                 label=int(label), **{'class': names[int(label)]})
            for box, score, label in zip(bboxes, scores, labels)
        ])


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_files(args, parser)
    images = collect_images(args.inputs, parser)
    import ovkit.baron  # noqa: F401  (registers Baron; applies ovkit.compat first)
    names = parse_class_names(args, parser)
    cfg = load_config(args, names, parser)
    model, trained_classes = build_model(cfg, args, names)
    pipeline = build_test_pipeline(model.cfg)
    visualizer = None if args.no_draw else build_visualizer(model.cfg, model)

    import mmcv
    from mmdet.apis import inference_detector
    os.makedirs(args.out_dir, exist_ok=True)
    records, totals = [], Counter()
    for path, stem in zip(images, output_stems(images)):
        try:
            result = inference_detector(model, path, test_pipeline=pipeline)
        except AssertionError as err:  # mmcv's LoadImageFromFile on a file it cannot decode
            if 'failed to load image' not in str(err):
                raise
            raise ValueError(f"INPUTS: '{path}' is not a readable image.") from err
        record = to_record(path, result, names, args.score_thr)
        record['json'] = osp.join(args.out_dir, f'{stem}.json')
        with open(record['json'], 'w', encoding='utf-8') as f:
            json.dump(record, f, indent=2)
        if visualizer is not None:
            ext = osp.splitext(path)[1].lower()
            ext = ext if ext in ('.jpg', '.jpeg', '.png') else '.png'
            record['drawn'] = osp.join(args.out_dir, stem + ext)
            image = mmcv.imread(path, channel_order='rgb')
            with warnings.catch_warnings():  # labels of boxes at the border overhang: harmless
                warnings.filterwarnings('ignore', message='.*out of bounds.*')
                visualizer.add_datasample(stem, image, result, draw_gt=False, show=False,
                                          out_file=record['drawn'],
                                          pred_score_thr=args.score_thr)
        counts = Counter(d['class'] for d in record['detections'])
        totals.update(counts)
        top = ', '.join(f'{name} x{n}' for name, n in counts.most_common(3))
        print(f'{path}: {len(record["detections"])} detections{" (" + top + ")" if top else ""}')
        records.append(record)

    trained = f'{len(trained_classes)} checkpoint classes' if trained_classes else 'checkpoint'
    print(f'ov_infer: {len(images)} images, vocabulary of {len(names)} classes (replacing the '
          f'{trained}), score >= {args.score_thr}: {sum(totals.values())} detections'
          + (f' ({", ".join(f"{k} x{v}" for k, v in totals.most_common(5))})' if totals else '')
          + f'. Results in {args.out_dir}')
    return dict(model=model, records=records, names=names)

