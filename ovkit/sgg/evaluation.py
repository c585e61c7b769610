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
- ngR@K: every (pair, predicate) scored ``obj_s * obj_o * p``; the best 100 kept. SGB leaves
  ties to ``np.argsort``; here ties go to the lower pair row, then the lower predicate.
- mR@K / ng-mR@K: per image and present predicate the per-predicate recall is collected; mR is
  the mean over *all* P predicates of the mean of its list (0 for a predicate never in GT).
- zR@K / ng-zR@K: recall over the GT triplets whose (subject class, object class, predicate)
  is in the zero-shot list; images without such triplets are skipped.
- A@K (PredCls/SGCls only): the first K rows *whose pair is a GT pair*;
  ``mean(hits) / mean(#GT)`` over images.
"""
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

MODES = ('predcls', 'sgcls', 'sgdet')
TOPKS = (20, 50, 100)


def iou_plus1(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU [N, M] with maskrcnn-benchmark's ``+1`` pixel convention, in float32.

    Args:
        boxes1: [N, 4] xyxy boxes (cast to float32 as ``BoxList`` does).
        boxes2: [M, 4] xyxy boxes.
    """
    b1 = np.asarray(boxes1, dtype=np.float32).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float32).reshape(-1, 4)
    area1 = (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1)
    area2 = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    lt = np.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = np.maximum(rb - lt + 1, 0)
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(divide='ignore', invalid='ignore'):
        return inter / (area1[:, None] + area2[None, :] - inter)


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


def _iou_aligned(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """IoU of row i of ``b1`` with row i of ``b2``: :func:`iou_plus1`'s float32 arithmetic."""
    b1 = b1.astype(np.float32, copy=False)
    b2 = b2.astype(np.float32, copy=False)
    area1 = (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1)
    area2 = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    wh = np.maximum(np.minimum(b1[:, 2:], b2[:, 2:]) - np.maximum(b1[:, :2], b2[:, :2]) + 1, 0)
    inter = wh[:, 0] * wh[:, 1]
    with np.errstate(divide='ignore', invalid='ignore'):
        return inter / (area1 + area2 - inter)


def _match(gt_trip, gt_tboxes, pred_trip, pred_tboxes, iou_thr):
    """[G, K] bool: GT triplet g is matched by predicted triplet p (SGB's rule).

    IoUs are computed only for the (g, p) whose three labels agree.
    """
    same = TripletSet._encode(gt_trip)[:, None] == TripletSet._encode(pred_trip)[None, :]
    g, p = np.nonzero(same)
    if g.size:
        ok = (_iou_aligned(gt_tboxes[g, :4], pred_tboxes[p, :4]) >= iou_thr) & \
            (_iou_aligned(gt_tboxes[g, 4:], pred_tboxes[p, 4:]) >= iou_thr)
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


def evaluate_image(image: Dict[str, np.ndarray], mode: str, iou_thr: float = 0.5,
                   topks: Sequence[int] = TOPKS,
                   zeroshot_triplets: Optional[np.ndarray] = None) -> Optional[dict]:
    """Evaluate one image; returns its counts, or None when SGB skips the image.

    Args:
        image: per-image dict with SGB's field names (see the module docstring).
        mode: 'predcls', 'sgcls' or 'sgdet'.
        iou_thr: IoU threshold for subject and object boxes.
        topks: the K values, at most 100 each for ng metrics as in SGB.
        zeroshot_triplets: [Z, 3] (subject class, object class, predicate) rows or a
            :class:`TripletSet` of them (faster when evaluating many images), or None.
    """
    if mode not in MODES:
        raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
    topks = tuple(int(k) for k in topks)
    kmax = max(topks)
    gt_rels = np.asarray(image['gt_rels'], dtype=np.int64).reshape(-1, 3)
    if gt_rels.shape[0] == 0:
        return None
    gt_boxes = np.asarray(image['gt_boxes']).reshape(-1, 4)
    gt_classes = np.asarray(image['gt_classes'], dtype=np.int64).reshape(-1)
    pred_rel_inds = np.asarray(image['pred_rel_inds'], dtype=np.int64).reshape(-1, 2)
    rel_scores = np.asarray(image['rel_scores'])
    if mode == 'predcls':
        pred_boxes, pred_classes = gt_boxes, gt_classes
        obj_scores = np.ones(gt_classes.shape[0])
    else:
        pred_boxes = np.asarray(image['pred_boxes']).reshape(-1, 4)
        pred_classes = np.asarray(image['pred_classes'], dtype=np.int64).reshape(-1)
        obj_scores = np.asarray(image['obj_scores']).reshape(-1)
    if pred_rel_inds.shape[0] == 0:
        return None
    rel_scores = rel_scores.reshape(pred_rel_inds.shape[0], -1)
    num_rel = rel_scores.shape[1]
    if gt_rels[:, 2].max() >= num_rel or gt_rels[:, 2].min() < 1:
        raise ValueError(f'gt_rels predicates must lie in 1..{num_rel - 1} (rel_scores has '
                         f'{num_rel} columns incl. background), got {gt_rels[:, 2].min()}..'
                         f'{gt_rels[:, 2].max()}')

    gt_trip, gt_tboxes = _triplets(gt_rels, gt_classes, gt_boxes)

    # graph constraint: one predicate per pair (first argmax), rows in the given order
    top_rows = pred_rel_inds[:kmax]
    top_pred = 1 + rel_scores[:kmax, 1:].argmax(1)
    trip, tboxes = _triplets(np.column_stack((top_rows, top_pred)), pred_classes, pred_boxes)
    hit = _hits_per_k(_match(gt_trip, gt_tboxes, trip, tboxes, iou_thr), topks)

    # no graph constraint: best kmax (pair, predicate) entries by obj_s * obj_o * p
    obj_per_rel = obj_scores[pred_rel_inds].prod(1)
    ng_scores = obj_per_rel[:, None] * rel_scores[:, 1:]
    flat = topk_flat_desc(ng_scores, kmax)
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
        evaluate_image(img, mode, iou_thr, topks, zeroshot_triplets) for img in images]
    if num_predicates is None:
        sizes = [np.asarray(img['rel_scores']) for img in images]
        sizes = [s.shape[-1] - 1 for s in sizes if s.size]
        if not sizes:
            raise ValueError('evaluate_sgg: pass num_predicates (no image has predicted pairs)')
        num_predicates = sizes[0]
    return summarize(records, num_predicates, topks, with_zeroshot=zeroshot_triplets is not None,
                     with_accuracy=mode != 'sgdet')
