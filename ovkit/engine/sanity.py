"""Annotation sanity for COCO-format detection files (mmdet's ``CocoDataset`` and subclasses).

mmdet 3.3's ``CocoDataset.parse_data_info`` silently skips a box that is NaN, smaller than one
pixel, outside its image or of a category id not in the file's category list; an image left with
no box stays in training as pure background (``filter_empty_gt`` looks at the raw annotations);
category names that differ from the config's classes leave nothing, which surfaces much later as
``ValueError: need at least one array to concatenate``; duplicate annotation ids, a box that is
not four numbers or a missing ``area`` end in a bare ``AssertionError`` / ``KeyError``.
:func:`check_coco` reads the file independently of mmdet, applies mmdet's own rules and says
which of these it found: *errors* (mmdet would crash, or nothing usable is left) and *warnings*
(what mmdet drops, counted, with examples). Written by hand: mmdet has no such report.

:func:`check_dataset` runs on a built dataset inside the Runner (rank 0 logs the warnings) and
drops training images whose every box was dropped, as ``filter_empty_gt`` intends.
"""
import json
import math
import os.path as osp
from collections import Counter, defaultdict

from .errors import UserError

__all__ = ['AnnotationError', 'SanityReport', 'check_coco', 'check_dataset', 'is_coco_format',
           'load_json']

EXAMPLES = 3  # examples named per kind of problem


class AnnotationError(UserError):
    """An annotation file that cannot be trained or evaluated on."""

    collective = True  # every rank builds the same dataset and raises it at the same point


def load_json(path):
    """Parse ``path``; a problem comes back as ``(None, 'what is wrong')``, never raised.

    Args:
        path: a local JSON file.
    """
    try:
        with open(path, 'rb') as f:
            raw = f.read()
    except OSError as exc:
        return None, f'unreadable ({exc.strerror or exc})'
    if not raw.strip():
        return None, f'empty file ({len(raw)} bytes)'
    try:
        return json.loads(raw), None
    except UnicodeDecodeError:
        return None, 'not JSON (not UTF-8 text; a binary file?)'
    except json.JSONDecodeError as exc:
        return None, (f'not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg} '
                      f'(file of {len(raw)} bytes; truncated or not JSON)')


def is_coco_format(data):
    """Whether parsed JSON is a COCO-style detection file (images, annotations, categories)."""
    return isinstance(data, dict) and 'images' in data and 'categories' in data


class SanityReport:
    """What :func:`check_coco` found in one file.

    Attributes:
        errors: messages for problems mmdet would crash on or that leave nothing to use.
        warnings: one message per kind of annotation mmdet drops, with counts and examples.
        dropped: kind -> number of annotations of that kind.
        lost_all_boxes: ids of images that had boxes of the config's classes, none usable.
        usable: number of boxes mmdet keeps.
    """

    def __init__(self, path):
        self.path = path
        self.errors, self.warnings = [], []
        self.dropped = Counter()
        self.lost_all_boxes = []
        self.usable = 0
        self.num_images = self.num_annotations = 0


def _finite_numbers(values):
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values)


def _examples(items):
    shown = ', '.join(str(i) for i in items[:EXAMPLES])
    return shown + (', ...' if len(items) > EXAMPLES else '')


def check_coco(data, path, classes=None, training=True):
    """Check a parsed COCO-format detection file against mmdet's parsing rules.

    Args:
        data: the parsed JSON (see :func:`load_json`).
        path: the file, for messages.
        classes: the config's class names (``metainfo.classes``); None skips the name check.
        training: True for a training set (no usable box is then an error).

    Returns:
        SanityReport: errors, warnings and counts.
    """
    rep = SanityReport(path)
    images = data.get('images')
    anns = data.get('annotations', [])
    cats = data.get('categories')
    for key, value in (('images', images), ('annotations', anns), ('categories', cats)):
        if not isinstance(value, list):
            rep.errors.append(f"'{key}' is {type(value).__name__}, not a list: not a COCO file")
    if rep.errors:
        return rep
    rep.num_images, rep.num_annotations = len(images), len(anns)
    if not images:
        rep.errors.append('the file lists no images (empty "images" list)')
    if not cats:
        rep.errors.append('the file lists no categories (empty "categories" list)')
    cat_names = {c.get('id'): c.get('name') for c in cats if isinstance(c, dict)}
    names_in_file = set(cat_names.values())
    wanted_ids = set(cat_names)
    if classes is not None and cats:
        missing = [c for c in classes if c not in names_in_file]
        if len(missing) == len(classes):
            rep.errors.append(
                f'none of the config\'s {len(classes)} class names is a category of this file '
                f'(config: {_examples(list(classes))}; file: '
                f'{_examples(sorted(map(str, names_in_file)))}): metainfo.classes must use '
                'the category names of the annotation file')
        elif missing:
            rep.warnings.append(f'{len(missing)} of the config\'s classes are not categories '
                                f'of this file, so they get no boxes: {_examples(missing)}')
        wanted_ids = {i for i, n in cat_names.items() if n in set(classes)}

    img_size, img_name, bad_imgs = {}, {}, []
    for img in images:
        if not isinstance(img, dict) or 'id' not in img:
            bad_imgs.append('an entry without "id"')
            continue
        w, h = img.get('width'), img.get('height')
        if not _finite_numbers([w, h]):
            bad_imgs.append(f"image {img['id']} ({img.get('file_name', '?')}) has no valid "
                            'width/height')
        img_size[img['id']] = (w, h)
        img_name[img['id']] = img.get('file_name') or f"image {img['id']}"
    if bad_imgs:
        rep.errors.append(f'{len(bad_imgs)} images cannot be read by mmdet: '
                          f'{_examples(bad_imgs)}')

    kinds = defaultdict(list)
    ids = Counter()
    had_box, kept_box = set(), set()
    for ann in anns:
        if not isinstance(ann, dict):
            kinds['malformed'].append(repr(ann)[:40])
            continue
        aid, iid = ann.get('id'), ann.get('image_id')
        ids[aid] += 1
        where = f'ann {aid} in {img_name.get(iid, f"image {iid}")}'
        box = ann.get('bbox')
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            kinds['malformed'].append(f'{where}: bbox={box!r}'[:80])
            continue
        if 'area' not in ann:
            kinds['no_area'].append(where)
            continue
        if ann.get('ignore', False):
            continue
        if iid not in img_size:
            kinds['unknown_image'].append(where)
            continue
        cid = ann.get('category_id')
        if cid not in cat_names:
            kinds['unknown_category'].append(f'{where}: category_id={cid}')
            continue
        if cid not in wanted_ids:
            continue  # a class the config leaves out: a deliberate subset, not a problem
        had_box.add(iid)
        if not _finite_numbers(box):
            kinds['non_finite'].append(f'{where}: bbox={box}')
            continue
        x1, y1, w, h = box
        iw, ih = img_size[iid]
        # mmdet's own rules, in its order (CocoDataset.parse_data_info).
        inter_w = max(0, min(x1 + w, iw) - max(x1, 0))
        inter_h = max(0, min(y1 + h, ih) - max(y1, 0))
        if inter_w * inter_h == 0:
            kinds['outside' if w > 0 and h > 0 else 'degenerate'].append(f'{where}: bbox={box}')
            continue
        if ann['area'] <= 0 or w < 1 or h < 1:
            kinds['degenerate'].append(f'{where}: bbox={box}, area={ann["area"]}')
            continue
        kept_box.add(iid)
        rep.usable += 1

    dup = sorted((i for i, n in ids.items() if n > 1), key=str)
    if dup:
        rep.errors.append(f'{len(dup)} annotation ids are used more than once '
                          f'({_examples(dup)}); mmdet requires unique ids')
    crash = {'malformed': 'boxes that are not [x, y, w, h]',
             'no_area': 'annotations without "area"'}
    for kind, text in crash.items():
        if kinds[kind]:
            rep.errors.append(f'{len(kinds[kind])} {text} ({_examples(kinds[kind])})')
    drop = {'non_finite': 'boxes with a NaN/inf coordinate',
            'degenerate': 'boxes of non-positive size (w or h < 1 pixel, or area <= 0)',
            'outside': 'boxes entirely outside their image',
            'unknown_category': 'annotations whose category_id is not in "categories"',
            'unknown_image': 'annotations whose image_id is not in "images"'}
    for kind, text in drop.items():
        if kinds[kind]:
            rep.dropped[kind] = len(kinds[kind])
            rep.warnings.append(f'{len(kinds[kind])} {text}, dropped: {_examples(kinds[kind])}')
    rep.lost_all_boxes = sorted(had_box - kept_box, key=str)
    if rep.lost_all_boxes:
        names = [img_name[i] for i in rep.lost_all_boxes]
        rep.warnings.append(f'{len(names)} images lost every box to the problems above '
                            f'({_examples(names)})')
    if training and images and cats and not any('class names' in e for e in rep.errors):
        if not anns:
            rep.errors.append('the file has no annotations: nothing to train on')
        elif rep.usable == 0:
            rep.errors.append(f'none of its {len(anns)} annotations is a usable box of the '
                              "config's classes: nothing to train on")
    return rep


def check_dataset(dataset, logger=None, is_main=True):
    """Annotation sanity on a built mmdet ``CocoDataset`` (a no-op for other datasets).

    Logs the report's warnings (main process only), drops training images whose every box
    was invalid when ``filter_cfg.filter_empty_gt`` is on (every rank, so all agree), and
    raises :class:`AnnotationError` when no image is left.

    Args:
        dataset: a fully initialised dataset; only mmdet ``CocoDataset`` (and subclasses) and
            only a top-level one (a wrapper's indices would go stale) are filtered.
        logger: where to log (mmengine's current logger by default).
        is_main: whether this process logs the warnings.

    Returns:
        int: the number of images dropped.
    """
    try:
        from mmdet.datasets import CocoDataset
    except ImportError:
        return 0
    if not isinstance(dataset, CocoDataset):
        return 0
    from mmengine.logging import print_log
    ann_file = dataset.ann_file
    where = 'test/val' if dataset.test_mode else 'training'
    if is_main and osp.isfile(ann_file):
        data, problem = load_json(ann_file)
        if data is not None and is_coco_format(data):
            rep = check_coco(data, ann_file, dataset.metainfo.get('classes'),
                             training=not dataset.test_mode)
            for text in rep.errors + rep.warnings:
                print_log(f'annotation check of {ann_file} ({where} set): {text}',
                          logger=logger or 'current', level=30)
    dropped = 0
    filter_cfg = dataset.filter_cfg or {}
    if not dataset.test_mode and filter_cfg.get('filter_empty_gt', False):
        keep = [i for i in range(len(dataset))
                if dataset.get_data_info(i).get('instances')]
        dropped = len(dataset) - len(keep)
        if dropped and keep:
            dataset.get_subset_(keep)
            if is_main:
                print_log(f'annotation check of {ann_file}: {dropped} training images left '
                          'without a usable box are dropped (filter_empty_gt)',
                          logger=logger or 'current', level=30)
    if len(dataset) == 0 or (dropped and not keep):
        raise AnnotationError(
            f'ann_file={ann_file!r}: no {where} image is left after mmdet parsed and filtered '
            f'it (classes {_examples(list(dataset.metainfo.get("classes", ())))}); see the '
            'annotation check above, or run tools/train.py on one process for the details.')
    return dropped
