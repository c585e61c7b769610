"""Write the open-vocabulary split annotation files from the standard COCO / LVIS JSONs.

OV-COCO (OVR-CNN split, 48 base + 17 novel of the 80 COCO classes): for each ``--ann``

    python tools/data/make_ov_splits.py coco --out-dir data/coco/annotations \\
        --ann data/coco/annotations/instances_train2017.json \\
        --ann data/coco/annotations/instances_val2017.json

writes ``<stem>_ov_base.json`` (annotations of the base classes only: what the detector trains
on) and ``<stem>_ov_all.json`` (annotations of all 65 classes: what it is evaluated on). Both
carry the same 65 categories, each with ``split: base|novel``, in the order of
``coco_ov_65.txt`` (shipped in ``ovkit/metadata``) so that mmdet's label index equals the row
of the class embeddings. Every image is kept, as in BARON's reference files: its KD batch
draws training images whose objects are all novel (the detection batch filters them with
``filter_empty_gt``), and the evaluation runs on all 5000 val images (detections on images
without a box of the 65 classes are false positives). ``--drop-empty-images`` drops them.

OV-LVIS (rare classes are novel):

    python tools/data/make_ov_splits.py lvis --ann data/lvis/lvis_v1_train.json \\
        --out-dir data/lvis

writes ``<stem>_norare.json``: the annotations of rare (``frequency == 'r'``) categories are
removed, everything else (images, their ``neg_category_ids``, the categories) is kept, as in
Detic's ``lvis_v1_train_norare.json``; categories gain ``split`` (r: novel, c/f: base). And
``<stem>_norare_cat_info.json``: per category (by id) its ``image_count`` and
``instance_count`` in the no-rare annotations (Detic's ``lvis_v1_train_cat_norare_info.json``),
from which BARON's OV-LVIS config takes its class weights (0 for the rare classes).
"""
import argparse
import json
import os
import os.path as osp
import sys
from collections import Counter

from ovkit.metadata import read_lines

DEFAULT_CLASSES = 'coco_ov_65.txt'  # shipped in ovkit.metadata
DEFAULT_NOVEL = 'coco_ov_17_novel.txt'
_OBTAIN = {
    'coco': 'download annotations_trainval2017.zip from https://cocodataset.org/#download',
    'lvis': 'download lvis_v1_train.json.zip from https://www.lvisdataset.org/dataset',
}


class SplitError(ValueError):
    """Bad input to the split tool; the message names the file, the key and the fix."""


def read_class_list(path):
    """Class names, one a line; blank lines and ``#`` comments skipped, order kept."""
    try:
        names = read_lines(path, 'class list')
    except FileNotFoundError as e:
        raise SplitError(str(e)) from None
    dups = sorted(n for n, c in Counter(names).items() if c > 1)
    if not names or dups:
        raise SplitError(f"class list '{path}' " + (f'repeats {dups}' if dups else 'is empty')
                         + '; it must list each class once, one per line.')
    return names


def load_annotations(path, dataset):
    """The json at ``path``, checked for the keys the split needs."""
    if not osp.isfile(path):
        raise SplitError(f"--ann '{path}' not found (absolute: {osp.abspath(path)}); "
                         f'{_OBTAIN[dataset]}.')
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise SplitError(f"--ann '{path}' is not valid JSON ({e}); re-download or unzip it "
                         'again.') from None
    if not isinstance(data, dict):
        raise SplitError(f"--ann '{path}' holds a {type(data).__name__}, not a {dataset.upper()} "
                         "annotation dict with 'images', 'annotations' and 'categories'.")
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise SplitError(f"--ann '{path}' has no '{key}' list: it is not a {dataset.upper()} "
                             'instances file (e.g. a captions or results file?); '
                             f'{_OBTAIN[dataset]}.')
    return data


def _write(data, path):
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(data, f)


def _stem(path):
    name = osp.basename(path)
    return name[:-5] if name.endswith('.json') else name


def coco_ov_split(ann, out_dir, classes_file=DEFAULT_CLASSES, novel_file=DEFAULT_NOVEL,
                  keep_empty_images=True, only=('base', 'all')):
    """Write ``<stem>_ov_base.json`` / ``<stem>_ov_all.json`` for one COCO json.

    Returns ``{kind: dict(path, images, annotations, per_split)}`` with the written counts.
    """
    classes = read_class_list(classes_file)
    novel = read_class_list(novel_file)
    stray = [n for n in novel if n not in classes]
    if stray:
        raise SplitError(f"novel class list '{novel_file}' names {stray}, which are not in the "
                         f"class list '{classes_file}'; the novel classes must be a subset.")
    data = load_annotations(ann, 'coco')
    by_name = {}
    for i, cat in enumerate(data['categories']):
        if 'id' not in cat or 'name' not in cat:
            raise SplitError(f"--ann '{ann}': categories[{i}] lacks 'id' or 'name'.")
        by_name[cat['name']] = cat
    missing = [n for n in classes if n not in by_name]
    if missing:
        raise SplitError(
            f"--ann '{ann}' has no category named {missing} (from '{classes_file}'); its "
            f"categories are {sorted(by_name)[:10]}... Use the COCO 2017 instances json (names as "
            "'tv', 'couch', 'motorcycle') or pass --classes/--novel lists that match it.")
    novel_set = set(novel)
    # Metadata order, so that mmdet's label index (json order) is the class-embedding row.
    cats = [dict(by_name[n], split='novel' if n in novel_set else 'base') for n in classes]
    split_of = {c['id']: c['split'] for c in cats}
    for i, a in enumerate(data['annotations']):
        if 'category_id' not in a or 'image_id' not in a:
            raise SplitError(f"--ann '{ann}': annotations[{i}] lacks 'category_id' or "
                             "'image_id'; the file is not a COCO instances json.")
    os.makedirs(out_dir, exist_ok=True)
    written = {}
    for kind in only:
        keep = {'base'} if kind == 'base' else {'base', 'novel'}
        anns = [a for a in data['annotations'] if split_of.get(a['category_id']) in keep]
        with_anns = {a['image_id'] for a in anns}
        images = [im for im in data['images'] if keep_empty_images or im['id'] in with_anns]
        out = {k: v for k, v in data.items() if k not in ('images', 'annotations', 'categories')}
        out.update(images=images, annotations=anns, categories=cats)
        path = osp.join(out_dir, f'{_stem(ann)}_ov_{kind}.json')
        _write(out, path)
        per_split = Counter(split_of[a['category_id']] for a in anns)
        written[kind] = dict(path=path, images=len(images), annotations=len(anns),
                             per_split=dict(per_split))
    return written


def lvis_norare(ann, out_dir):
    """Write ``<stem>_norare.json`` (rare-class annotations removed) for one LVIS json.

    Returns ``dict(path, images, annotations, removed, per_split)``.
    """
    data = load_annotations(ann, 'lvis')
    split_of = {}
    for i, cat in enumerate(data['categories']):
        freq = cat.get('frequency')
        if freq not in ('r', 'c', 'f') or 'id' not in cat:
            raise SplitError(
                f"--ann '{ann}': categories[{i}] ({cat.get('name', '?')}) has frequency "
                f"{freq!r}; LVIS categories need 'id' and 'frequency' in r/c/f. Use the LVIS "
                f'v1 json; {_OBTAIN["lvis"]}.')
        split_of[cat['id']] = 'novel' if freq == 'r' else 'base'
    unknown = sorted({a.get('category_id') for a in data['annotations']} - set(split_of),
                     key=str)
    if unknown:
        raise SplitError(f"--ann '{ann}': annotations refer to category_id {unknown[:10]} that "
                         "'categories' does not define; the file is corrupt or truncated.")
    anns = [a for a in data['annotations'] if split_of[a['category_id']] == 'base']
    out = dict(data, annotations=anns,
               categories=[dict(c, split=split_of[c['id']]) for c in data['categories']])
    os.makedirs(out_dir, exist_ok=True)
    path = osp.join(out_dir, f'{_stem(ann)}_norare.json')
    _write(out, path)
    images_of = {}
    for a in anns:
        images_of.setdefault(a['category_id'], set()).add(a['image_id'])
    instances = Counter(a['category_id'] for a in anns)
    cat_info = [dict(id=c['id'], name=c.get('name'), frequency=c['frequency'],
                     image_count=len(images_of.get(c['id'], ())),
                     instance_count=instances.get(c['id'], 0))
                for c in sorted(data['categories'], key=lambda c: c['id'])]
    info_path = osp.join(out_dir, f'{_stem(ann)}_norare_cat_info.json')
    _write(cat_info, info_path)
    return dict(path=path, cat_info=info_path, images=len(data['images']),
                annotations=len(anns), removed=len(data['annotations']) - len(anns),
                per_split=dict(Counter(split_of.values())))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='dataset', required=True)
    coco = sub.add_parser('coco', help='OV-COCO: <stem>_ov_base.json and <stem>_ov_all.json')
    coco.add_argument('--ann', action='append', required=True,
                      help='COCO instances json; repeat for train and val')
    coco.add_argument('--out-dir', required=True)
    coco.add_argument('--classes', default=DEFAULT_CLASSES, help='the 65 OV-COCO class names')
    coco.add_argument('--novel', default=DEFAULT_NOVEL, help='the 17 novel class names')
    coco.add_argument('--drop-empty-images', action='store_true',
                      help='drop images left without annotations (default: keep every image, '
                           "as BARON's KD batch and the full-val evaluation need)")
    coco.add_argument('--only', choices=('base', 'all'), default=None,
                      help='write only this file per --ann (default: both)')
    lvis = sub.add_parser('lvis', help='OV-LVIS: <stem>_norare.json without rare classes')
    lvis.add_argument('--ann', action='append', required=True, help='LVIS v1 json')
    lvis.add_argument('--out-dir', required=True)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        for ann in args.ann:
            if args.dataset == 'coco':
                only = (args.only,) if args.only else ('base', 'all')
                res = coco_ov_split(ann, args.out_dir, args.classes, args.novel,
                                    not args.drop_empty_images, only)
                for r in res.values():
                    print(f"{r['path']}: {r['images']} images, {r['annotations']} annotations "
                          f"(base {r['per_split'].get('base', 0)}, "
                          f"novel {r['per_split'].get('novel', 0)})")
            else:
                r = lvis_norare(ann, args.out_dir)
                print(f"{r['path']}: {r['images']} images, {r['annotations']} annotations kept, "
                      f"{r['removed']} rare-class annotations removed; categories: "
                      f"{r['per_split'].get('base', 0)} base, {r['per_split'].get('novel', 0)} "
                      f"novel (rare); category info (class weights): {r['cat_info']}")
    except SplitError as e:
        sys.exit(f'make_ov_splits: error: {e}')

