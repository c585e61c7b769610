"""Predicate re-balancing of the VG150 training split: a per-predicate cap on relations.

VG150's predicates are long-tailed (``on``/``has``/``wearing`` hold most relations). A common
remedy, and the one SGB users write by hand, keeps relations over the shuffled training
images until each predicate reaches a cap. Written by hand here (mmengine's
``ClassBalancedDataset`` repeats whole images by a class frequency; it cannot drop single
relations), as an opt-in dataset wrapper with the fixes that the hand-written versions miss:

- the training split only (building it on val/test is an error: the metrics need every GT);
- seeded: the same seed keeps the same relations, on every process and every run;
- the selection is cached in the work dir as ``.npz``, keyed on the annotation files (path,
  size, mtime) and on every option, so a changed file or cap never reuses a stale selection;
- an explicit policy for images whose relations are all dropped (``empty_images``):
  ``'drop'`` (default) removes them, as relation models drop images without relations;
  ``'keep'`` keeps them with no relation (every pair of their boxes is then a background pair);
- before/after predicate frequency bar charts (PNG, log scale, predicates in frequency order)
  and the counts (JSON) are written to the run's log folder.

Relations are counted as annotation rows, duplicates included, before SGB's train-time rule
(one random predicate per subject-object pair), which still applies at every fetch. A dropped
relation's boxes stay in the image; their pair is then an unannotated, i.e. background, pair.
"""
import copy
import hashlib
import json
import os
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
from mmdet.registry import DATASETS
from mmengine.dataset import BaseDataset
from mmengine.dist import is_main_process
from mmengine.logging import MMLogger, print_log

from .dataset import VGSGGDataset, sample_one_predicate_per_pair

CACHE_VERSION = 1
EMPTY_POLICIES = ('drop', 'keep')


def _file_identity(path: str) -> list:
    st = os.stat(path)
    return [osp.abspath(path), st.st_size, st.st_mtime_ns]


def cap_relations(relations: Sequence[np.ndarray], max_per_predicate: int,
                  seed: int) -> List[np.ndarray]:
    """Which relation rows to keep so that no predicate has more than the cap.

    The images are visited in a random order drawn from ``seed``, the relations of an image in
    their annotation order, and a relation is kept while its predicate is under the cap (the
    rule of the hand-written SGB scripts, vectorised).

    Args:
        relations: per image [R_i, 3] (subject, object, predicate 1..P).
        max_per_predicate: the cap.
        seed: seed of the image order.

    Returns:
        list: per image the kept row indices (sorted) into its relations.
    """
    num = len(relations)
    order = np.random.default_rng(seed).permutation(num)
    counts = np.array([len(relations[i]) for i in order], dtype=np.int64)
    if counts.sum() == 0:
        return [np.zeros(0, dtype=np.int64) for _ in range(num)]
    preds = np.concatenate([np.asarray(relations[i])[:, 2] for i in order]).astype(np.int64)
    # rank of each relation among those of its predicate, in the visiting order
    by_pred = np.argsort(preds, kind='stable')
    sorted_preds = preds[by_pred]
    group_start = np.searchsorted(sorted_preds, sorted_preds, side='left')
    rank = np.empty_like(by_pred)
    rank[by_pred] = np.arange(len(preds)) - group_start
    keep = rank < max_per_predicate
    kept = [None] * num
    start = 0
    for img, n in zip(order, counts):
        kept[img] = np.flatnonzero(keep[start:start + n]).astype(np.int64)
        start += n
    return kept


def frequency_figure(counts: np.ndarray, names: Sequence[str], title: str,
                     cap: Optional[int] = None):
    """Bar chart of predicate counts, most frequent first, on a log axis.

    Args:
        counts: [P] relations per predicate (no background).
        names: the P predicate names.
        title: chart title.
        cap: draw the cap as a dashed line.

    Returns:
        matplotlib ``Figure`` (not attached to pyplot).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    counts = np.asarray(counts)
    order = np.argsort(-counts, kind='stable')
    fig = Figure(figsize=(max(6, 0.28 * len(order) + 2), 4.5))
    FigureCanvasAgg(fig)        # no pyplot: no global backend state, safe in workers
    ax = fig.add_subplot()
    x = np.arange(len(order))
    # a zero count has no place on a log axis: drawn as an empty slot, labelled (0)
    ax.bar(x, np.where(counts[order] > 0, counts[order], np.nan))
    ax.set_yscale('log')
    # bars grow from 1, so that their heights compare on the log axis
    ax.set_ylim(0.8, max(int(counts.max()) if counts.size else 1, cap or 1, 1) * 1.6)
    if cap is not None:
        ax.axhline(cap, ls='--', lw=1, color='gray', label=f'cap {cap}')
        ax.legend(fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels([f'{names[i]} ({int(counts[i])})' for i in order], rotation=90,
                       fontsize=7)
    ax.set_ylabel('relations (log scale)')
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


@DATASETS.register_module()
class PredicateRebalanceDataset:
    """Training split of a :class:`VGSGGDataset` with at most ``max_per_predicate`` relations
    per predicate.

    Config (only ``train_dataloader.dataset``; val/test stay plain ``VGSGGDataset``)::

        train_dataloader = dict(dataset=dict(
            type='PredicateRebalanceDataset', max_per_predicate=100, seed=0,
            dataset=dict(type='VGSGGDataset', split='train', ...)))

    Args:
        dataset: the ``VGSGGDataset`` (or its config) of the training split.
        max_per_predicate: cap on the relations (annotation rows) of every predicate.
        seed: seed of the image order that decides which relations are kept.
        empty_images: ``'drop'`` images whose relations are all dropped, or ``'keep'`` them
            without relations.
        cache_dir: folder of the ``.npz`` selection cache; None: the run's work dir (found
            through the Runner's logger), no cache outside a Runner.
        out_dir: folder of the frequency charts and counts; None: the run's log folder
            (``work_dir/<timestamp>/``), nothing outside a Runner.
        plot: write the before/after charts (PNG) besides the counts (JSON).
        lazy_init: defer the selection to :meth:`full_init` (mmengine's convention).
    """

    def __init__(self, dataset: Union[dict, VGSGGDataset], max_per_predicate: int = 100,
                 seed: int = 0, empty_images: str = 'drop', cache_dir: Optional[str] = None,
                 out_dir: Optional[str] = None, plot: bool = True,
                 lazy_init: bool = False) -> None:
        if isinstance(dataset, dict):
            dataset = DATASETS.build(dataset)
        if not isinstance(dataset, VGSGGDataset):
            raise TypeError(f'PredicateRebalanceDataset wraps a VGSGGDataset, got '
                            f'{type(dataset).__name__} (train_dataloader.dataset.dataset)')
        if dataset.split != 'train':
            raise ValueError(
                f"PredicateRebalanceDataset re-balances the training split only, got "
                f"split={dataset.split!r}: val/test must keep every relation for the metrics. "
                "Wrap only train_dataloader.dataset.")
        if not isinstance(max_per_predicate, int) or max_per_predicate < 1:
            raise ValueError(f'PredicateRebalanceDataset: max_per_predicate must be a positive '
                             f'int, got {max_per_predicate!r}')
        if empty_images not in EMPTY_POLICIES:
            raise ValueError(f'PredicateRebalanceDataset: empty_images must be one of '
                             f'{EMPTY_POLICIES}, got {empty_images!r}')
        self.dataset = dataset
        self.max_per_predicate = max_per_predicate
        self.seed = seed
        self.empty_images = empty_images
        self.cache_dir = cache_dir
        self.out_dir = out_dir
        self.plot = plot
        self.image_indices = np.zeros(0, dtype=np.int64)
        self.kept_rows: List[np.ndarray] = []
        self.counts_before = self.counts_after = None
        self._fully_initialized = False
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self.dataset.metainfo)

    # -- selection --------------------------------------------------------------------------
    def _run_dirs(self):
        """(cache dir, chart dir): the options, else the Runner's work dir and log folder."""
        log_file = getattr(MMLogger.get_current_instance(), 'log_file', None)
        log_dir = osp.dirname(log_file) if log_file else None
        cache_dir = self.cache_dir
        if cache_dir is None and log_dir is not None:
            cache_dir = osp.dirname(log_dir)        # work_dir/<timestamp>/ -> work_dir
        return cache_dir, self.out_dir if self.out_dir is not None else log_dir

    def cache_key(self) -> str:
        """The files and options the selection depends on, as a JSON string."""
        ds = self.dataset
        return json.dumps(dict(
            version=CACHE_VERSION, ann=_file_identity(ds.ann_file),
            dicts=_file_identity(ds.dict_file), images=_file_identity(ds.image_file),
            split=ds.split, num_im=ds.num_im, num_val_im=ds.num_val_im,
            filter_empty_rels=ds.filter_empty_rels, filter_non_overlap=ds.filter_non_overlap,
            box_scale=ds.box_scale, num_images=len(ds),
            max_per_predicate=self.max_per_predicate, seed=self.seed,
            empty_images=self.empty_images), sort_keys=True)

    def _relations(self) -> List[np.ndarray]:
        # BaseDataset.get_data_info: the stored relations, without the per-fetch predicate draw
        return [np.asarray(BaseDataset.get_data_info(self.dataset, i)['relations'],
                           dtype=np.int64).reshape(-1, 3) for i in range(len(self.dataset))]

    def full_init(self) -> None:
        """Build the inner dataset, then load or compute the selection (and write charts)."""
        if self._fully_initialized:
            return
        self.dataset.full_init()
        relations = self._relations()
        cache_dir, out_dir = self._run_dirs()
        key = self.cache_key()
        cache = None
        kept = None
        if cache_dir is not None:
            digest = hashlib.sha1(key.encode()).hexdigest()[:16]
            cache = osp.join(cache_dir, f'vg_sgg_rebalance_{digest}.npz')
            kept = self._read_cache(cache, key, relations)
        if kept is None:
            kept = cap_relations(relations, self.max_per_predicate, self.seed)
            if cache is not None:
                self._write_cache(cache, key, kept)
        self._select(relations, kept)
        self._fully_initialized = True
        if out_dir is not None and is_main_process():
            self.save_report(out_dir)

    @staticmethod
    def _read_cache(path: str, key: str, relations) -> Optional[List[np.ndarray]]:
        if not osp.isfile(path):
            return None
        with np.load(path, allow_pickle=False) as z:
            if str(z['key']) != key or len(z['offsets']) != len(relations) + 1:
                return None
            rows, offsets = z['rows'], z['offsets']
        kept = [rows[offsets[i]:offsets[i + 1]] for i in range(len(relations))]
        if any(len(k) and k.max() >= len(r) for k, r in zip(kept, relations)):
            return None
        print_log(f'predicate re-balancing: read the selection from {path}', logger='current')
        return kept

    @staticmethod
    def _write_cache(path: str, key: str, kept: List[np.ndarray]) -> None:
        os.makedirs(osp.dirname(path) or '.', exist_ok=True)
        offsets = np.concatenate([[0], np.cumsum([len(k) for k in kept])]).astype(np.int64)
        rows = np.concatenate(kept) if kept else np.zeros(0, np.int64)
        tmp = f'{path}.{os.getpid()}.tmp.npz'
        np.savez(tmp, key=np.array(key), offsets=offsets, rows=rows.astype(np.int64))
        os.replace(tmp, path)       # atomic: every rank may write the same cache

    def _select(self, relations, kept) -> None:
        num_preds = len(self.dataset.metainfo['predicates'])
        before = np.zeros(num_preds, dtype=np.int64)
        after = np.zeros(num_preds, dtype=np.int64)
        images, rows = [], []
        for i, (rel, k) in enumerate(zip(relations, kept)):
            before += np.bincount(rel[:, 2], minlength=num_preds)
            if len(rel) and not len(k) and self.empty_images == 'drop':
                continue
            after += np.bincount(rel[k, 2], minlength=num_preds)
            images.append(i)
            rows.append(k)
        self.image_indices = np.asarray(images, dtype=np.int64)
        self.kept_rows = rows
        self.counts_before, self.counts_after = before[1:], after[1:]
        print_log(f'predicate re-balancing (max_per_predicate={self.max_per_predicate}, '
                  f'seed={self.seed}, empty_images={self.empty_images!r}): '
                  f'{int(before.sum())} -> {int(after.sum())} relations, {len(relations)} -> '
                  f'{len(images)} images', logger='current')

    def save_report(self, out_dir: str) -> List[str]:
        """Write the counts (JSON) and, with ``plot``, the before/after charts (PNG)."""
        os.makedirs(out_dir, exist_ok=True)
        names = list(self.dataset.metainfo['predicates'][1:])
        report = dict(max_per_predicate=self.max_per_predicate, seed=self.seed,
                      empty_images=self.empty_images,
                      num_images=[len(self.dataset), len(self.image_indices)],
                      before={n: int(c) for n, c in zip(names, self.counts_before)},
                      after={n: int(c) for n, c in zip(names, self.counts_after)})
        paths = [osp.join(out_dir, 'predicate_rebalance.json')]
        with open(paths[0], 'w') as f:
            json.dump(report, f, indent=1)
        if self.plot:
            for tag, counts in (('before', self.counts_before), ('after', self.counts_after)):
                title = (f'predicate frequency {tag} re-balancing\n'
                         f'(cap {self.max_per_predicate}, seed {self.seed}, '
                         f'{int(counts.sum())} relations)')
                path = osp.join(out_dir, f'predicate_frequency_{tag}.png')
                frequency_figure(counts, names, title, self.max_per_predicate).savefig(
                    path, dpi=100)
                paths.append(path)
            print_log(f'predicate frequency charts: {", ".join(paths[1:])}', logger='current')
        return paths

    # -- dataset interface -----------------------------------------------------------------
    def _check_init(self) -> None:
        if not self._fully_initialized:
            self.full_init()

    def __len__(self) -> int:
        self._check_init()
        return len(self.image_indices)

    def capped_relations(self, idx: int) -> np.ndarray:
        """The kept relations [R, 3] of image ``idx`` (before the per-fetch predicate draw)."""
        self._check_init()
        info = BaseDataset.get_data_info(self.dataset, int(self.image_indices[idx]))
        return np.asarray(info['relations'], dtype=np.int64).reshape(-1, 3)[self.kept_rows[idx]]

    def get_data_info(self, idx: int) -> dict:
        """The inner data_info with the kept relations (and SGB's one predicate per pair)."""
        self._check_init()
        info = BaseDataset.get_data_info(self.dataset, int(self.image_indices[idx]))
        rels = np.asarray(info['relations'], dtype=np.int64).reshape(-1, 3)[self.kept_rows[idx]]
        if self.dataset.filter_duplicate_rels:
            rels = sample_one_predicate_per_pair(rels)
        info['relations'] = rels
        info['sample_idx'] = idx
        return info

    def __getitem__(self, idx: int) -> dict:
        self._check_init()
        for _ in range(self.dataset.max_refetch + 1):
            data = self.dataset.pipeline(self.get_data_info(idx))
            if data is not None:
                return data
            idx = int(np.random.randint(0, len(self)))
        raise RuntimeError(f'PredicateRebalanceDataset: the pipeline returned None for '
                           f'{self.dataset.max_refetch + 1} images in a row; check the '
                           'train pipeline')

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(max_per_predicate={self.max_per_predicate}, '
                f'seed={self.seed}, empty_images={self.empty_images!r}, '
                f'dataset={type(self.dataset).__name__}(split={self.dataset.split!r}))')
