"""Scene-graph evaluation with the exact numbers of Scene-Graph-Benchmark.pytorch (SGB).

SGB (``maskrcnn_benchmark/data/datasets/evaluation/vg/sgg_eval.py`` and ``vg_eval.py``)
evaluates one image at a time: it builds triplets for *all* predicted pairs, matches every GT
triplet in a Python loop, fully sorts all ``pairs x predicates`` scores for the no-graph-
constraint metrics and forms ``reduce(np.union1d, pred_to_gt[:k])`` per K and per metric.
mmdet and mmengine have no scene-graph metric, so this module is written by hand. It keeps SGB's
definitions and floating-point operations but is vectorised per image, and only looks at the
rows that can matter (the first ``max(topks)`` rows, the first ``max(topks)`` rows on GT pairs
for A@K, the ``max(topks)`` best (pair, predicate) entries found with a partial sort).

Per image (SGB field names, all numpy):

- ``gt_boxes`` [G, 4] xyxy in original-image pixels, ``gt_classes`` [G] (1-based, 0 = bg),
  ``gt_rels`` [R, 3] (subject index, object index, predicate 1..P), duplicates kept;
- ``pred_boxes`` [N, 4], ``pred_classes`` [N], ``obj_scores`` [N],
  ``pred_rel_inds`` [M, 2] indices into the predicted boxes, rows in ranking order,
  ``rel_scores`` [M, P + 1] (column 0 = background).

Rules (SGB's, listed in ``docs/sgg.md``): images without GT relations or without predicted
pairs are skipped (not counted); PredCls replaces the predicted boxes/classes by the GT ones and
the object scores by 1; a triplet matches when the three labels are equal and both the subject
and object IoU (float32, ``+1`` in widths and heights, as maskrcnn-benchmark's ``boxlist_iou``)
are ``>= iou_thr``; one prediction may match several (duplicate) GT triplets.

- R@K: predicate = first argmax of the foreground scores, rows in the given order; per image
  ``#GT matched by the first K rows / #GT``; mean over images.
- ngR@K: every (pair, predicate) scored ``obj_s * obj_o * p``; the best 100 kept, in SGB's
  order including ties (SGB's unstable ``np.argsort`` is run whenever ties could change the
  list, see :func:`sgb_nogc_order`).
- mR@K / ng-mR@K: per image and present predicate the per-predicate recall is collected; mR is
  the mean over *all* P predicates of the mean of its list (0 for a predicate never in GT).
- zR@K / ng-zR@K: recall over the GT triplets whose (subject class, object class, predicate)
  is in the zero-shot list; images without such triplets are skipped.
- A@K (PredCls/SGCls only): the first K rows *whose pair is a GT pair*;
  ``mean(hits) / mean(#GT)`` over images. (SGB tests "is a GT pair" on ``s * 1024 + o``,
  which agrees with the exact test here for images with fewer than 1025 boxes: all of VG150.)

Malformed input (wrong shapes, indices out of range, NaN/inf scores or boxes, 0-based GT
classes) raises a ``ValueError`` naming the image and the field.
"""
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from .boxes import box_iou

MODES = ('predcls', 'sgcls', 'sgdet')
TOPKS = (20, 50, 100)


def topk_flat_desc(scores: np.ndarray, k: int) -> np.ndarray:
    """Flat indices of the ``k`` largest entries of a 2-D array, best first.

    Ties go to the lower flat index (lower row, then lower column). Only rows whose maximum
    reaches the k-th largest row maximum can hold a top-k entry, so the partial sort runs on
    those rows alone.

    Args:
        scores: [M, C] array.
        k: number of entries to return (fewer when the array is smaller).
    """
    num_rows, num_cols = scores.shape
    if num_rows * num_cols <= k:
        flat_idx = np.arange(num_rows * num_cols)
        vals = scores.ravel()
    else:
        rows = np.arange(num_rows)
        if num_rows > k:
            row_max = scores.max(1)
            bound = np.partition(row_max, num_rows - k)[num_rows - k]
            rows = np.flatnonzero(row_max >= bound)
        sub = scores[rows].ravel()
        kth = np.partition(sub, sub.size - k)[sub.size - k]
        keep = np.flatnonzero(sub >= kth)
        flat_idx = rows[keep // num_cols] * num_cols + keep % num_cols
        vals = sub[keep]
    order = np.argsort(-vals, kind='stable')[:k]
    return flat_idx[order]



def sgb_nogc_order(scores: np.ndarray, k: int = 100) -> np.ndarray:
    """Flat indices of SGB's no-graph-constraint list, ``np.argsort(-scores.ravel())[:k]``.

    SGB ranks every (pair, predicate) entry with numpy's default sort, which is not stable:
    the order of tied scores is whatever that sort gives (it depends on the whole array and
    on numpy's build). Ties are the norm when several pairs share their scores (a
    frequency-only predictor gives every pair of the same class pair the same scores). The
    fast path finds the ``k + 1`` best entries with a partial sort; when they are strictly
    decreasing the first ``k`` are unique and in the only possible order. Otherwise SGB's
    own expression is evaluated on the same array, so tied entries come in exactly SGB's
    order.

    Args:
        scores: [M, C] array (SGB's ``obj_scores_per_rel[:, None] * rel_scores[:, 1:]``).
        k: length of the list (SGB: 100).
    """
    flat = topk_flat_desc(scores, k + 1)
    vals = scores.ravel()[flat]
    if np.all(vals[:-1] > vals[1:]):
        return flat[:k]
    return np.argsort(-scores.ravel())[:k]

class TripletSet:
    """A set of (subject class, object class, predicate) rows with a vectorised lookup.

    Args:
        triplets: [Z, 3] integer rows (SGB's ``zeroshot_triplet.pytorch`` column order).
    """

    def __init__(self, triplets) -> None:
        rows = np.asarray(triplets, dtype=np.int64).reshape(-1, 3)
        if rows.size and (rows.min() < 0 or rows.max() >= 1 << 21):
            raise ValueError('TripletSet: class and predicate ids must lie in [0, 2**21)')
        self.rows = rows
        self.keys = np.unique(self._encode(rows))

    @staticmethod
    def _encode(rows):
        return (rows[:, 0] << 42) | (rows[:, 1] << 21) | rows[:, 2]

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, rows: np.ndarray) -> np.ndarray:
        """[R] bool: which of the [R, 3] rows are in the set."""
        keys = self._encode(np.asarray(rows, dtype=np.int64).reshape(-1, 3))
        if len(self.keys) == 0:
            return np.zeros(len(keys), dtype=bool)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[pos] == keys


def _match(gt_trip, gt_tboxes, pred_trip, pred_tboxes, iou_thr):
    """[G, K] bool: GT triplet g is matched by predicted triplet p (SGB's rule).

    IoUs are computed only for the (g, p) whose three labels agree.
    """
    same = TripletSet._encode(gt_trip)[:, None] == TripletSet._encode(pred_trip)[None, :]
    g, p = np.nonzero(same)
    if g.size:
        ok = (box_iou(gt_tboxes[g, :4], pred_tboxes[p, :4], aligned=True) >= iou_thr) & \
            (box_iou(gt_tboxes[g, 4:], pred_tboxes[p, 4:], aligned=True) >= iou_thr)
        same[g[~ok], p[~ok]] = False
    return same


def _triplets(rels, classes, boxes):
    """(sub class, predicate, obj class) rows and their [sub box, obj box] rows."""
    s, o = rels[:, 0], rels[:, 1]
    return (np.column_stack((classes[s], rels[:, 2], classes[o])),
            np.column_stack((boxes[s], boxes[o])))


def _hits_per_k(match, topks):
    """[T, G] bool: GT matched by the first K columns of ``match`` for each K."""
    if match.shape[1] == 0:
        return np.zeros((len(topks), match.shape[0]), dtype=bool)
    # cumulative "matched by one of the first j columns": read it at column K-1
    cum = np.logical_or.accumulate(match, axis=1)
    cols = np.minimum(np.asarray(topks), match.shape[1]) - 1
    return cum[:, cols].T


def _integers(arr: np.ndarray, key: str, where: str) -> np.ndarray:
    if arr.dtype.kind in 'iub' or arr.size == 0:
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == 'f' and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        return arr.astype(np.int64)
    raise ValueError(f'{where}: {key} must hold integers, got dtype {arr.dtype}')


def _matrix(image: dict, key: str, cols: int, where: str, integer: bool = False) -> np.ndarray:
    """``image[key]`` as an [N, cols] array (empty input of any shape is [0, cols])."""
    if key not in image:
        raise KeyError(f'{where}: no {key!r} in the image dict (SGB field names: gt_boxes, '
                       'gt_classes, gt_rels, pred_boxes, pred_classes, obj_scores, '
                       'pred_rel_inds, rel_scores)')
    arr = np.asarray(image[key])
    if arr.size == 0:
        arr = arr.reshape(0, cols)
    elif arr.ndim != 2 or arr.shape[1] != cols:
        raise ValueError(f'{where}: {key} must have shape [N, {cols}], got {arr.shape}')
    return _integers(arr, key, where) if integer else arr


def _vector(image: dict, key: str, length: int, where: str, integer: bool = False
            ) -> np.ndarray:
    """``image[key]`` as a 1-D array of ``length`` entries (one per box)."""
    if key not in image:
        raise KeyError(f'{where}: no {key!r} in the image dict')
    arr = np.asarray(image[key])
    if arr.size == 0 and length == 0:
        arr = arr.reshape(0)
    elif arr.ndim != 1 or len(arr) != length:
        raise ValueError(f'{where}: {key} must have shape [{length}] (one entry per box), got '
                         f'{arr.shape}')
    return _integers(arr, key, where) if integer else arr


def _check_finite(arr: np.ndarray, key: str, where: str) -> None:
    if arr.size and not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f'{where}: {key} has non-finite values (first at index '
                         f'{tuple(int(i) for i in bad)}: {arr[tuple(bad)]}); the model produced '
                         'NaN/inf, which SGB would rank silently')


def _check_indices(idx: np.ndarray, num: int, key: str, what: str, where: str) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= num):
        raise ValueError(f'{where}: {key} indexes {what} {int(idx.min())}..{int(idx.max())}, but '
                         f'there are {num} {what} (valid: 0..{num - 1})')


def check_topks(topks: Sequence[int], where: str = 'topks') -> tuple:
    """``topks`` as a tuple of ints in 1..100 (SGB cuts the no-graph-constraint list at 100).

    Args:
        topks: the K values.
        where: prefix of the error message.
    """
    try:
        ks = tuple(int(k) for k in topks)
    except (TypeError, ValueError):
        raise ValueError(f'{where}: topks must be a sequence of integers, got {topks!r}'
                         ) from None
    if not ks or min(ks) < 1 or max(ks) > 100:
        raise ValueError(f'{where}: topks must be integers in 1..100, got {topks!r}: SGB keeps '
                         'only the best 100 (pair, predicate) entries for ngR@K (sgg_eval.py), '
                         'so K > 100 would not be its metric')
    return ks


def evaluate_image(image: Dict[str, np.ndarray], mode: str, iou_thr: float = 0.5,
                   topks: Sequence[int] = TOPKS,
                   zeroshot_triplets: Optional[np.ndarray] = None,
                   name: Optional[str] = None) -> Optional[dict]:
    """Evaluate one image; returns its counts, or None when SGB skips the image.

    The fields are checked first (shapes, index ranges, integers, finite scores and boxes):
    a malformed prediction is a ``ValueError`` naming ``name`` and the field, never a silent
    number.

    Args:
        image: per-image dict with SGB's field names (see the module docstring).
        mode: 'predcls', 'sgcls' or 'sgdet'.
        iou_thr: IoU threshold for subject and object boxes.
        topks: the K values, each in 1..100 (SGB cuts the ng list at 100).
        zeroshot_triplets: [Z, 3] (subject class, object class, predicate) rows or a
            :class:`TripletSet` of them (faster when evaluating many images), or None.
        name: how errors name the image (e.g. ``'img_id=1, img_path=...'``).
    """
    where = f'SGG evaluation of {name}' if name else 'SGG evaluation'
    if mode not in MODES:
        raise ValueError(f'{where}: mode must be one of {MODES}, got {mode!r}')
    if not 0 < iou_thr <= 1:
        raise ValueError(f'{where}: iou_thr must lie in (0, 1], got {iou_thr!r}')
    topks = check_topks(topks, where)
    kmax = max(topks)
    gt_boxes = _matrix(image, 'gt_boxes', 4, where)
    _check_finite(gt_boxes, 'gt_boxes', where)
    num_gt = gt_boxes.shape[0]
    gt_classes = _vector(image, 'gt_classes', num_gt, where, integer=True)
    if num_gt and gt_classes.min() < 1:
        raise ValueError(f'{where}: gt_classes must be 1-based object classes (0 is SGB\'s '
                         f'background), got min {int(gt_classes.min())}; SGGMetric adds 1 to '
                         "mmdet's 0-based labels")
    gt_rels = _matrix(image, 'gt_rels', 3, where, integer=True)
    _check_indices(gt_rels[:, :2], num_gt, 'gt_rels[:, :2]', 'GT boxes', where)
    pred_rel_inds = _matrix(image, 'pred_rel_inds', 2, where, integer=True)
    num_pairs = pred_rel_inds.shape[0]
    if 'rel_scores' not in image:
        raise KeyError(f'{where}: no \'rel_scores\' in the image dict')
    rel_scores = np.asarray(image['rel_scores'])
    if num_pairs == 0:
        if rel_scores.size:
            raise ValueError(f'{where}: rel_scores has shape {rel_scores.shape} but '
                             'pred_rel_inds has no rows')
    elif rel_scores.ndim != 2 or rel_scores.shape[0] != num_pairs or rel_scores.shape[1] < 2:
        raise ValueError(f'{where}: rel_scores must have shape [M, P + 1] = [{num_pairs}, '
                         f'P + 1] (one row per pred_rel_inds row, column 0 = background), got '
                         f'{rel_scores.shape}')
    _check_finite(rel_scores, 'rel_scores', where)
    if mode == 'predcls':
        # SGB replaces the predicted boxes/classes by the GT ones and the scores by 1
        pred_boxes, pred_classes = gt_boxes, gt_classes
        obj_scores = np.ones(gt_classes.shape[0])
        _check_indices(pred_rel_inds, num_gt, 'pred_rel_inds', 'GT boxes (PredCls pairs '
                       'index the GT boxes)', where)
    else:
        pred_boxes = _matrix(image, 'pred_boxes', 4, where)
        _check_finite(pred_boxes, 'pred_boxes', where)
        num_pred = pred_boxes.shape[0]
        pred_classes = _vector(image, 'pred_classes', num_pred, where, integer=True)
        obj_scores = _vector(image, 'obj_scores', num_pred, where)
        _check_finite(obj_scores, 'obj_scores', where)
        _check_indices(pred_rel_inds, num_pred, 'pred_rel_inds', 'predicted boxes', where)
    if gt_rels.shape[0] == 0 or num_pairs == 0:
        return None
    num_rel = rel_scores.shape[1]
    if gt_rels[:, 2].max() >= num_rel or gt_rels[:, 2].min() < 1:
        raise ValueError(f'{where}: gt_rels predicates must lie in 1..{num_rel - 1} '
                         f'(rel_scores has {num_rel} columns incl. background), got '
                         f'{gt_rels[:, 2].min()}..{gt_rels[:, 2].max()}')

    gt_trip, gt_tboxes = _triplets(gt_rels, gt_classes, gt_boxes)

    # graph constraint: one predicate per pair (first argmax), rows in the given order
    top_rows = pred_rel_inds[:kmax]
    top_pred = 1 + rel_scores[:kmax, 1:].argmax(1)
    trip, tboxes = _triplets(np.column_stack((top_rows, top_pred)), pred_classes, pred_boxes)
    hit = _hits_per_k(_match(gt_trip, gt_tboxes, trip, tboxes, iou_thr), topks)

    # no graph constraint: best kmax (pair, predicate) entries by obj_s * obj_o * p
    obj_per_rel = obj_scores[pred_rel_inds].prod(1)
    ng_scores = obj_per_rel[:, None] * rel_scores[:, 1:]
    flat = sgb_nogc_order(ng_scores, kmax)
    ng_rows, ng_pred = np.divmod(flat, ng_scores.shape[1])
    trip, tboxes = _triplets(np.column_stack((pred_rel_inds[ng_rows], ng_pred + 1)),
                             pred_classes, pred_boxes)
    ng_hit = _hits_per_k(_match(gt_trip, gt_tboxes, trip, tboxes, iou_thr), topks)

    labels = gt_rels[:, 2]
    pred_count = np.bincount(labels, minlength=num_rel)
    out = dict(
        num_gt=gt_rels.shape[0],
        hit=hit.sum(1),
        ng_hit=ng_hit.sum(1),
        pred_count=pred_count,
        pred_hit=np.stack([np.bincount(labels[h], minlength=num_rel) for h in hit]),
        ng_pred_hit=np.stack([np.bincount(labels[h], minlength=num_rel) for h in ng_hit]),
        acc_hit=None, zs_count=0, zs_hit=None, ng_zs_hit=None)

    if mode != 'sgdet':
        # A@K: first K rows among those whose (subject, object) pair is a GT pair
        on_gt = np.isin((pred_rel_inds[:, 0] << 32) | pred_rel_inds[:, 1],
                        (gt_rels[:, 0] << 32) | gt_rels[:, 1])
        rows = np.flatnonzero(on_gt)[:kmax]
        pairs = np.column_stack((pred_rel_inds[rows], 1 + rel_scores[rows, 1:].argmax(1)))
        trip, tboxes = _triplets(pairs, pred_classes, pred_boxes)
        out['acc_hit'] = _hits_per_k(
            _match(gt_trip, gt_tboxes, trip, tboxes, iou_thr), topks).sum(1)

    if zeroshot_triplets is not None:
        if not isinstance(zeroshot_triplets, TripletSet):
            zeroshot_triplets = TripletSet(zeroshot_triplets)
        is_zs = zeroshot_triplets.contains(
            np.column_stack((gt_classes[gt_rels[:, 0]], gt_classes[gt_rels[:, 1]], labels)))
        out['zs_count'] = int(is_zs.sum())
        out['zs_hit'] = (hit & is_zs).sum(1)
        out['ng_zs_hit'] = (ng_hit & is_zs).sum(1)
    return out


def summarize(records: Iterable[Optional[dict]], num_predicates: int,
              topks: Sequence[int] = TOPKS, with_zeroshot: bool = False,
              with_accuracy: bool = True) -> dict:
    """Combine per-image counts into SGB's numbers (fractions, not percent).

    The float operations follow SGB (per-image ratios, ``np.mean`` over the lists, a running
    sum over predicates for mR), so the results agree with it to the last bit.

    Args:
        records: outputs of :func:`evaluate_image` in image order (None entries skipped).
        num_predicates: P, the number of foreground predicates (VG150: 50).
        topks: the K values used in :func:`evaluate_image`.
        with_zeroshot: report zR@K / ng-zR@K (needs records made with zero-shot triplets).
        with_accuracy: report A@K (PredCls/SGCls).

    Returns:
        dict with 'R@K', 'ngR@K', 'mR@K', 'ng-mR@K' (+ 'zR@K', 'ng-zR@K', 'A@K') floats,
        'per_predicate' {'mR@K'/'ng-mR@K': [P] recalls of predicates 1..P}, 'gt_count' [P]
        GT relations per predicate over the evaluated images, and 'num_images' evaluated.
    """
    recs = [r for r in records if r is not None]
    topks = tuple(int(k) for k in topks)
    nan = float('nan')
    res = {'num_images': len(recs)}
    per_pred = {}
    if recs:
        num_gt = np.array([float(r['num_gt']) for r in recs])
        hit = np.stack([r['hit'] for r in recs]).astype(np.float64)       # [I, T]
        ng_hit = np.stack([r['ng_hit'] for r in recs]).astype(np.float64)
        count = np.stack([r['pred_count'][:num_predicates + 1] for r in recs])  # [I, P+1]
        pred_hit = np.stack([r['pred_hit'][:, :num_predicates + 1] for r in recs])  # [I,T,P+1]
        ng_pred_hit = np.stack([r['ng_pred_hit'][:, :num_predicates + 1] for r in recs])
    for t, k in enumerate(topks):
        if not recs:
            for name in ('R', 'ngR', 'mR', 'ng-mR'):
                res[f'{name}@{k}'] = nan
            per_pred[f'mR@{k}'] = per_pred[f'ng-mR@{k}'] = np.zeros(num_predicates)
            continue
        res[f'R@{k}'] = float(np.mean(hit[:, t] / num_gt))
        res[f'ngR@{k}'] = float(np.mean(ng_hit[:, t] / num_gt))
        for name, hits in (('mR', pred_hit), ('ng-mR', ng_pred_hit)):
            recalls = np.zeros(num_predicates)
            total = 0.0
            for n in range(1, num_predicates + 1):
                present = count[:, n] > 0
                if present.any():
                    recalls[n - 1] = np.mean(hits[present, t, n] / count[present, n])
                total += recalls[n - 1]
            res[f'{name}@{k}'] = float(total / float(num_predicates))
            per_pred[f'{name}@{k}'] = recalls
    if with_zeroshot:
        zs = [r for r in recs if r['zs_count'] > 0]
        for t, k in enumerate(topks):
            for name, field in (('zR', 'zs_hit'), ('ng-zR', 'ng_zs_hit')):
                res[f'{name}@{k}'] = float(np.mean(
                    [float(r[field][t]) / float(r['zs_count']) for r in zs])) if zs else nan
        res['num_zeroshot_images'] = len(zs)
    if with_accuracy:
        acc = [r for r in recs if r['acc_hit'] is not None]
        for t, k in enumerate(topks):
            if acc:
                res[f'A@{k}'] = float(np.mean([float(r['acc_hit'][t]) for r in acc]) /
                                      np.mean([float(r['num_gt']) for r in acc]))
            else:
                res[f'A@{k}'] = nan
    res['per_predicate'] = per_pred
    res['gt_count'] = (count.sum(0)[1:] if recs else np.zeros(num_predicates, np.int64))
    return res


def evaluate_sgg(images: Sequence[Dict[str, np.ndarray]], mode: str,
                 num_predicates: Optional[int] = None, iou_thr: float = 0.5,
                 topks: Sequence[int] = TOPKS,
                 zeroshot_triplets: Optional[np.ndarray] = None) -> dict:
    """SGB's R@K, ngR@K, mR@K, ng-mR@K, zR@K, ng-zR@K and A@K over a list of images.

    Args:
        images: per-image dicts with SGB's field names (see the module docstring).
        mode: 'predcls', 'sgcls' or 'sgdet' (A@K is reported for the first two only).
        num_predicates: P; by default ``rel_scores.shape[1] - 1`` of the first image.
        iou_thr: IoU threshold for subject and object boxes.
        topks: the K values.
        zeroshot_triplets: [Z, 3] (subject class, object class, predicate) rows, or None.
    """
    if zeroshot_triplets is not None and not isinstance(zeroshot_triplets, TripletSet):
        zeroshot_triplets = TripletSet(zeroshot_triplets)
    records: List[Optional[dict]] = [
        evaluate_image(img, mode, iou_thr, topks, zeroshot_triplets, name=f'image {i}')
        for i, img in enumerate(images)]
    if num_predicates is None:
        sizes = [np.asarray(img['rel_scores']) for img in images]
        sizes = [s.shape[-1] - 1 for s in sizes if s.size]
        if not sizes:
            raise ValueError('evaluate_sgg: pass num_predicates (no image has predicted pairs)')
        num_predicates = sizes[0]
    return summarize(records, num_predicates, topks, with_zeroshot=zeroshot_triplets is not None,
                     with_accuracy=mode != 'sgdet')
