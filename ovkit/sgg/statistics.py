"""Predicate frequency statistics of the VG150 train split (SGB's ``get_VG_statistics``).

``fg_matrix[cs, co, p]`` counts the train relations (subject class, object class, predicate),
``bg_matrix[cs, co]`` the ordered box pairs that overlap (all pairs when none do), both over
SGB's statistics split: train, relations whose boxes do not overlap dropped, duplicates kept.
SGB then sets ``fg[:, :, 0] = bg + 1`` and ``pred_dist = log(fg / fg.sum(-1) + 1e-3)``, the
initial frequency bias of Motifs and friends. Classes are 1-based with 0 = background (SGB's
layout). The result is cached as ``.npz`` keyed on the files and the filter options.
"""
import hashlib
import json
import os
import os.path as osp
from typing import Optional, Union

import numpy as np

from .boxes import box_iou
from .dataset import VGSGGDataset, load_vg_dicts, load_vg_graphs

CACHE_VERSION = 1


def _file_identity(path: str) -> list:
    st = os.stat(path)
    return [osp.abspath(path), st.st_size, st.st_mtime_ns]


def _pairs_to_count(boxes: np.ndarray) -> np.ndarray:
    """SGB's ``box_filter(must_overlap=True)``: ordered pairs i != j whose boxes intersect with
    positive area (``bbox_overlaps(..., to_move=0) > 0`` in float64, no +1; the IoU is > 0
    exactly when the intersection is); all ordered pairs when none do."""
    overlaps = box_iou(boxes, boxes, offset=0, dtype=np.float64) > 0
    np.fill_diagonal(overlaps, False)
    if not overlaps.any():
        overlaps = ~np.eye(len(boxes), dtype=bool)
    return np.column_stack(np.nonzero(overlaps))


def compute_statistics(ann_file: str, dict_file: str, num_im: int = -1,
                       num_val_im: int = 5000, box_scale: int = 1024) -> dict:
    """Count SGB's frequency statistics from the files (no images needed).

    Args:
        ann_file: ``VG-SGG-with-attri.h5``.
        dict_file: ``VG-SGG-dicts-with-attri.json``.
        num_im: the dataset's ``num_im``.
        num_val_im: the dataset's ``num_val_im`` (the train split is what follows val).
        box_scale: h5 box set used for the overlap tests (SGB: 1024).
    """
    classes, predicates = load_vg_dicts(dict_file)
    num_obj, num_rel = len(classes) + 1, len(predicates)
    # SGB builds VGDataset(split='train', filter_duplicate_rels=False) with its default
    # filter_non_overlap=True and filter_empty_rels=True for the statistics
    graphs = load_vg_graphs(ann_file, 'train', num_im, num_val_im, filter_empty_rels=True,
                            filter_non_overlap=True, box_scale=box_scale)
    fg = np.zeros((num_obj, num_obj, num_rel), dtype=np.int64)
    bg = np.zeros((num_obj, num_obj), dtype=np.int64)
    for boxes, labels, rels in zip(graphs['boxes'], graphs['labels'], graphs['relations']):
        np.add.at(fg, (labels[rels[:, 0]], labels[rels[:, 1]], rels[:, 2]), 1)
        pairs = _pairs_to_count(boxes)
        np.add.at(bg, (labels[pairs[:, 0]], labels[pairs[:, 1]]), 1)
    bg_matrix = bg.copy()
    fg[:, :, 0] = bg + 1
    pred_dist = np.log(fg / fg.sum(2)[:, :, None] + 1e-3).astype(np.float32)
    return dict(fg_matrix=fg, bg_matrix=bg_matrix, pred_dist=pred_dist,
                obj_classes=('__background__', ) + tuple(classes),
                rel_classes=tuple(predicates), num_images=len(graphs['index']))


def _resolve(dataset) -> dict:
    """Files and options of a built VGSGGDataset or of a dataset config dict."""
    if isinstance(dataset, dict) or hasattr(dataset, 'to_dict'):
        cfg = dict(dataset)
        while 'dataset' in cfg and cfg.get('type') != 'VGSGGDataset':
            cfg = dict(cfg['dataset'])            # RepeatDataset / ClassBalancedDataset
        from mmdet.registry import DATASETS
        cfg.update(split='train', lazy_init=True, check_images=False, pipeline=[])
        dataset = DATASETS.build(cfg)
    while not isinstance(dataset, VGSGGDataset) and hasattr(dataset, 'dataset'):
        dataset = dataset.dataset
    if not isinstance(dataset, VGSGGDataset):
        raise TypeError(f'get_statistics needs a VGSGGDataset or its config, got '
                        f'{type(dataset).__name__}')
    return dict(ann_file=dataset.ann_file, dict_file=dataset.dict_file, num_im=dataset.num_im,
                num_val_im=dataset.num_val_im, box_scale=dataset.box_scale)


def get_statistics(dataset: Union[dict, VGSGGDataset], cache_dir: Optional[str] = None) -> dict:
    """SGB's frequency statistics of the train split, cached in ``cache_dir``.

    Args:
        dataset: a built ``VGSGGDataset`` (any split: the statistics always come from train,
            as in SGB) or its config dict (wrappers with a ``dataset`` key are unwrapped).
        cache_dir: folder for the ``.npz`` cache (e.g. the work dir); None: no cache.

    Returns:
        dict(fg_matrix=int64 [C+1, C+1, P+1] with ``[:, :, 0] = bg + 1``,
        bg_matrix=int64 [C+1, C+1], pred_dist=float32 [C+1, C+1, P+1],
        obj_classes=(C+1 names), rel_classes=(P+1 names), num_images).
    """
    opts = _resolve(dataset)
    cache = None
    if cache_dir is not None:
        key = json.dumps(dict(version=CACHE_VERSION, ann=_file_identity(opts['ann_file']),
                              dicts=_file_identity(opts['dict_file']), num_im=opts['num_im'],
                              num_val_im=opts['num_val_im'], box_scale=opts['box_scale']),
                         sort_keys=True)
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        cache = osp.join(cache_dir, f'vg_sgg_statistics_{digest}.npz')
        if osp.isfile(cache):
            with np.load(cache, allow_pickle=False) as z:
                if str(z['key']) == key:
                    return dict(fg_matrix=z['fg_matrix'], bg_matrix=z['bg_matrix'],
                                pred_dist=z['pred_dist'], obj_classes=tuple(z['obj_classes']),
                                rel_classes=tuple(z['rel_classes']),
                                num_images=int(z['num_images']))
    stats = compute_statistics(**opts)
    if cache is not None:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f'{cache}.{os.getpid()}.tmp.npz'
        np.savez(tmp, key=np.array(key), fg_matrix=stats['fg_matrix'],
                 bg_matrix=stats['bg_matrix'], pred_dist=stats['pred_dist'],
                 obj_classes=np.array(stats['obj_classes']),
                 rel_classes=np.array(stats['rel_classes']),
                 num_images=np.array(stats['num_images']))
        os.replace(tmp, cache)      # atomic: several ranks may write the same cache
    return stats
