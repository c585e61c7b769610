"""Speed of ovkit's scene-graph evaluator against Scene-Graph-Benchmark's own evaluator.

The peer is a faithful rendering of SGB's per-image code path
(``maskrcnn_benchmark/data/datasets/evaluation/vg/vg_eval.py::evaluate_relation_of_one_image``
and the ``SG*`` classes of ``sgg_eval.py``): one image at a time, triplets for every predicted
pair, a Python loop over GT triplets with maskrcnn-benchmark's torch ``boxlist_iou``, a full
``argsort`` of all pairs x predicates for the no-graph-constraint metrics and
``reduce(np.union1d, pred_to_gt[:k])`` per K and metric. ovkit's side is the shipped core,
``ovkit.sgg.evaluation.evaluate_image`` + ``summarize`` (what ``SGGMetric`` runs).

Both sides get the same synthetic predictions (generated outside the timed region) and must
produce the same numbers; the script exits non-zero if any metric differs.

    python tools/analysis/benchmark_sgg_eval.py                # 5000 images x 4096 pairs x 51
    python tools/analysis/benchmark_sgg_eval.py --quick        # small, all three modes

The default is the issue's size (SGDet: 5000 images x 4096 candidate pairs x 51 predicates);
SGB's side takes about 0.05 s per image (about 4.5 minutes on a shared 2-core CPU, progress
every 500 images on stderr), ovkit's about 7 s (38x, measured 2026-11-29). ``--quick`` (20
images per mode, 300 pairs) adds the special cases: images without GT relations or predicted
pairs, SGB's [[0, 0]] pair, duplicate GT and frequency-predictor scores (ties in the
no-graph-constraint ranking).
"""
import argparse
import sys
import time
from functools import reduce

import numpy as np
import torch

from ovkit.sgg.evaluation import MODES, TOPKS, TripletSet, evaluate_image, summarize


# --------------------------------------------------------------------------------------------
# SGB's evaluator, rendered from sgg_eval.py / vg_eval.py / utils/miscellaneous.py
# --------------------------------------------------------------------------------------------
def sgb_intersect_2d(x1, x2):
    if x1.shape[1] != x2.shape[1]:
        raise ValueError('Input arrays must have same #columns')
    return (x1[..., None] == x2.T[None, ...]).all(1)


def sgb_argsort_desc(scores):
    return np.column_stack(np.unravel_index(np.argsort(-scores.ravel()), scores.shape))


def sgb_bbox_overlaps(boxes1, boxes2):
    """maskrcnn-benchmark's ``boxlist_iou`` on two ``BoxList(xyxy)`` (float32 torch, +1)."""
    b1 = torch.as_tensor(boxes1, dtype=torch.float32)
    b2 = torch.as_tensor(boxes2, dtype=torch.float32)
    area1 = (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1)
    area2 = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    lt = torch.max(b1[:, None, :2], b2[:, :2])
    rb = torch.min(b1[:, None, 2:], b2[:, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    iou = inter / (area1[:, None] + area2 - inter)
    return iou.cpu().numpy()


def sgb_triplet(relations, classes, boxes, predicate_scores=None, class_scores=None):
    sub_id, ob_id, pred_label = relations[:, 0], relations[:, 1], relations[:, 2]
    triplets = np.column_stack((classes[sub_id], pred_label, classes[ob_id]))
    triplet_boxes = np.column_stack((boxes[sub_id], boxes[ob_id]))
    triplet_scores = None
    if predicate_scores is not None and class_scores is not None:
        triplet_scores = np.column_stack(
            (class_scores[sub_id], predicate_scores, class_scores[ob_id]))
    return triplets, triplet_boxes, triplet_scores


def sgb_compute_pred_matches(gt_triplets, pred_triplets, gt_boxes, pred_boxes, iou_thres):
    keeps = sgb_intersect_2d(gt_triplets, pred_triplets)
    gt_has_match = keeps.any(1)
    pred_to_gt = [[] for _ in range(pred_boxes.shape[0])]
    for gt_ind, gt_box, keep_inds in zip(np.where(gt_has_match)[0], gt_boxes[gt_has_match],
                                         keeps[gt_has_match]):
        boxes = pred_boxes[keep_inds]
        sub_iou = sgb_bbox_overlaps(gt_box[None, :4], boxes[:, :4])[0]
        obj_iou = sgb_bbox_overlaps(gt_box[None, 4:], boxes[:, 4:])[0]
        inds = (sub_iou >= iou_thres) & (obj_iou >= iou_thres)
        for i in np.where(keep_inds)[0][inds]:
            pred_to_gt[i].append(int(gt_ind))
    return pred_to_gt


class SGBEvaluator:
    """SGB's evaluator objects and ``evaluate_relation_of_one_image``, one image per call."""

    def __init__(self, mode, num_rel, zeroshot_triplet, iou_thres=0.5):
        self.mode, self.num_rel, self.iou_thres = mode, num_rel, iou_thres
        self.zeroshot_triplet = zeroshot_triplet
        ks = {20: [], 50: [], 100: []}
        self.r = {
            'recall': {k: [] for k in ks}, 'recall_nogc': {k: [] for k in ks},
            'zeroshot_recall': {k: [] for k in ks}, 'ng_zeroshot_recall': {k: [] for k in ks},
            'accuracy_hit': {k: [] for k in ks}, 'accuracy_count': {k: [] for k in ks},
            'mean_recall_collect': {k: [[] for _ in range(num_rel)] for k in ks},
            'ng_mean_recall_collect': {k: [[] for _ in range(num_rel)] for k in ks},
        }

    # SGRecall.calculate_recall
    def _recall(self, lc):
        pred_rels = np.column_stack((lc['pred_rel_inds'], 1 + lc['rel_scores'][:, 1:].argmax(1)))
        pred_scores = lc['rel_scores'][:, 1:].max(1)
        gt_triplets, gt_triplet_boxes, _ = sgb_triplet(lc['gt_rels'], lc['gt_classes'],
                                                       lc['gt_boxes'])
        lc['gt_triplets'], lc['gt_triplet_boxes'] = gt_triplets, gt_triplet_boxes
        pred_triplets, pred_triplet_boxes, _ = sgb_triplet(
            pred_rels, lc['pred_classes'], lc['pred_boxes'], pred_scores, lc['obj_scores'])
        pred_to_gt = sgb_compute_pred_matches(gt_triplets, pred_triplets, gt_triplet_boxes,
                                              pred_triplet_boxes, self.iou_thres)
        lc['pred_to_gt'] = pred_to_gt
        for k in self.r['recall']:
            match = reduce(np.union1d, pred_to_gt[:k])
            self.r['recall'][k].append(float(len(match)) / float(lc['gt_rels'].shape[0]))

    # SGNoGraphConstraintRecall.calculate_recall
    def _nogc(self, lc):
        obj_scores, pred_rel_inds, rel_scores = lc['obj_scores'], lc['pred_rel_inds'], \
            lc['rel_scores']
        obj_scores_per_rel = obj_scores[pred_rel_inds].prod(1)
        nogc_overall_scores = obj_scores_per_rel[:, None] * rel_scores[:, 1:]
        nogc_score_inds = sgb_argsort_desc(nogc_overall_scores)[:100]
        nogc_pred_rels = np.column_stack((pred_rel_inds[nogc_score_inds[:, 0]],
                                          nogc_score_inds[:, 1] + 1))
        nogc_pred_scores = rel_scores[nogc_score_inds[:, 0], nogc_score_inds[:, 1] + 1]
        nogc_pred_triplets, nogc_pred_triplet_boxes, _ = sgb_triplet(
            nogc_pred_rels, lc['pred_classes'], lc['pred_boxes'], nogc_pred_scores, obj_scores)
        nogc_pred_to_gt = sgb_compute_pred_matches(
            lc['gt_triplets'], nogc_pred_triplets, lc['gt_triplet_boxes'],
            nogc_pred_triplet_boxes, self.iou_thres)
        lc['nogc_pred_to_gt'] = nogc_pred_to_gt
        for k in self.r['recall_nogc']:
            match = reduce(np.union1d, nogc_pred_to_gt[:k])
            self.r['recall_nogc'][k].append(float(len(match)) / float(lc['gt_rels'].shape[0]))

    # SGPairAccuracy.prepare_gtpair / calculate_recall
    def _prepare_gtpair(self, lc):
        pred_pair_idx = lc['pred_rel_inds'][:, 0] * 1024 + lc['pred_rel_inds'][:, 1]
        gt_pair_idx = lc['gt_rels'][:, 0] * 1024 + lc['gt_rels'][:, 1]
        self.pred_pair_in_gt = (pred_pair_idx[:, None] == gt_pair_idx[None, :]).sum(-1) > 0

    def _accuracy(self, lc):
        for k in self.r['accuracy_hit']:
            if self.mode != 'sgdet':
                gt_pair_pred_to_gt = []
                for p, flag in zip(lc['pred_to_gt'], self.pred_pair_in_gt):
                    if flag:
                        gt_pair_pred_to_gt.append(p)
                if len(gt_pair_pred_to_gt) > 0:
                    gt_pair_match = reduce(np.union1d, gt_pair_pred_to_gt[:k])
                else:
                    gt_pair_match = []
                self.r['accuracy_hit'][k].append(float(len(gt_pair_match)))
                self.r['accuracy_count'][k].append(float(lc['gt_rels'].shape[0]))

    # SGMeanRecall / SGNGMeanRecall.collect_mean_recall_items
    def _collect_mean(self, lc, key, name):
        pred_to_gt, gt_rels = lc[key], lc['gt_rels']
        for k in self.r[name]:
            match = reduce(np.union1d, pred_to_gt[:k])
            recall_hit = [0] * self.num_rel
            recall_count = [0] * self.num_rel
            for idx in range(gt_rels.shape[0]):
                local_label = gt_rels[idx, 2]
                recall_count[int(local_label)] += 1
                recall_count[0] += 1
            for idx in range(len(match)):
                local_label = gt_rels[int(match[idx]), 2]
                recall_hit[int(local_label)] += 1
                recall_hit[0] += 1
            for n in range(self.num_rel):
                if recall_count[n] > 0:
                    self.r[name][k][n].append(float(recall_hit[n] / recall_count[n]))

    # SGZeroShotRecall / SGNGZeroShotRecall.prepare_zeroshot / calculate_recall
    def _prepare_zeroshot(self, lc):
        gt_rels, gt_classes = lc['gt_rels'], lc['gt_classes']
        sub_id, ob_id, pred_label = gt_rels[:, 0], gt_rels[:, 1], gt_rels[:, 2]
        gt_triplets = np.column_stack((gt_classes[sub_id], gt_classes[ob_id], pred_label))
        return np.where(sgb_intersect_2d(gt_triplets, self.zeroshot_triplet).sum(-1) > 0
                        )[0].tolist()

    def _zeroshot(self, pred_to_gt, zeroshot_idx, name):
        for k in self.r[name]:
            match = reduce(np.union1d, pred_to_gt[:k])
            if len(zeroshot_idx) > 0:
                match_list = match.tolist() if not isinstance(match, (list, tuple)) else match
                zeroshot_match = len(zeroshot_idx) + len(match_list) - len(
                    set(zeroshot_idx + match_list))
                self.r[name][k].append(float(zeroshot_match) / float(len(zeroshot_idx)))

    def evaluate_relation_of_one_image(self, gt, pred):
        mode = self.mode
        lc = {'gt_rels': gt['gt_rels']}
        if len(lc['gt_rels']) == 0:
            return
        lc['gt_boxes'], lc['gt_classes'] = gt['gt_boxes'], gt['gt_classes']
        lc['pred_rel_inds'], lc['rel_scores'] = pred['pred_rel_inds'], pred['rel_scores']
        lc['pred_boxes'], lc['pred_classes'] = pred['pred_boxes'], pred['pred_classes']
        lc['obj_scores'] = pred['obj_scores']
        if mode != 'sgdet':
            self._prepare_gtpair(lc)
        zs_idx = self._prepare_zeroshot(lc)
        ng_zs_idx = self._prepare_zeroshot(lc)
        if mode == 'predcls':
            lc['pred_boxes'] = lc['gt_boxes']
            lc['pred_classes'] = lc['gt_classes']
            lc['obj_scores'] = np.ones(lc['gt_classes'].shape[0])
        if lc['pred_rel_inds'].shape[0] == 0:
            return
        self._recall(lc)
        self._nogc(lc)
        self._accuracy(lc)
        self._collect_mean(lc, 'pred_to_gt', 'mean_recall_collect')
        self._collect_mean(lc, 'nogc_pred_to_gt', 'ng_mean_recall_collect')
        self._zeroshot(lc['pred_to_gt'], zs_idx, 'zeroshot_recall')
        self._zeroshot(lc['nogc_pred_to_gt'], ng_zs_idx, 'ng_zeroshot_recall')

    def results(self):
        """The printed numbers: ``generate_print_string`` after ``calculate_mean_recall``."""
        out = {}
        for k in (20, 50, 100):
            out[f'R@{k}'] = np.mean(self.r['recall'][k])
            out[f'ngR@{k}'] = np.mean(self.r['recall_nogc'][k])
            out[f'zR@{k}'] = np.mean(self.r['zeroshot_recall'][k])
            out[f'ng-zR@{k}'] = np.mean(self.r['ng_zeroshot_recall'][k])
            for name, key in (('mR', 'mean_recall_collect'), ('ng-mR', 'ng_mean_recall_collect')):
                sum_recall = 0
                for idx in range(self.num_rel - 1):
                    lst = self.r[key][k][idx + 1]
                    sum_recall += 0.0 if len(lst) == 0 else np.mean(lst)
                out[f'{name}@{k}'] = sum_recall / float(self.num_rel - 1)
            if self.mode != 'sgdet':
                out[f'A@{k}'] = np.mean(self.r['accuracy_hit'][k]) / np.mean(
                    self.r['accuracy_count'][k])
        return {k: float(v) for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# synthetic predictions shaped like a relation head's output
# --------------------------------------------------------------------------------------------
QUIRKS = (None, 'no_gt', None, 'no_pairs', 'frequency', 'pair_00', None, 'dup_gt',
          'frequency', None)


def make_image(rng, mode, num_pairs, num_rel, num_classes=150, case=None, prior=None):
    """One image: GT graph and predictions in SGB's field names (numpy).

    ``case`` makes one of the inputs SGB treats specially: 'no_gt' (no GT relation),
    'no_pairs' (no predicted pair), 'pair_00' (SGB's [[0, 0]] pair of a 1-box image), 'dup_gt'
    (duplicate GT triplets) or 'frequency' (a frequency-only predictor: every pair of a class
    pair gets the row of ``prior`` [C + 1, C + 1, num_rel], so the no-graph-constraint
    ranking is full of ties).
    """
    num_gt_obj = int(rng.integers(2, 25))
    wh = rng.uniform(300, 1000, size=2)
    xy = rng.uniform(0, wh * 0.7, size=(num_gt_obj, 2))
    size = rng.uniform(10, 300, size=(num_gt_obj, 2))
    gt_boxes = np.concatenate([xy, np.minimum(xy + size, wh - 1)], 1).astype(np.float32)
    gt_classes = rng.integers(1, num_classes + 1, size=num_gt_obj)
    num_rels = int(rng.integers(1, 3 * num_gt_obj))
    s = rng.integers(0, num_gt_obj, size=num_rels)
    o = (s + rng.integers(1, num_gt_obj, size=num_rels)) % num_gt_obj
    gt_rels = np.column_stack((s, o, rng.integers(1, num_rel, size=num_rels)))
    if case == 'dup_gt':                    # duplicate GT triplets / duplicate pairs
        gt_rels = np.concatenate([gt_rels, gt_rels[:int(rng.integers(1, len(gt_rels) + 1))]])
    elif case == 'no_gt':
        gt_rels = gt_rels[:0]
    elif case == 'frequency':               # GT mostly the prior's favourite: ties decide hits
        fav = 1 + prior[gt_classes[s], gt_classes[o], 1:].argmax(1)
        gt_rels[:, 2] = np.where(rng.random(num_rels) < 0.7, fav, gt_rels[:, 2])
    if mode == 'sgdet':
        num_det = max(2, int(np.ceil(np.sqrt(num_pairs))) + 1)
        src = rng.integers(0, num_gt_obj, size=num_det)
        jitter = rng.normal(0, 8, size=(num_det, 4)).astype(np.float32)
        pred_boxes = gt_boxes[src] + jitter
        pred_boxes[:, 2:] = np.maximum(pred_boxes[:, 2:], pred_boxes[:, :2] + 1)
        pred_classes = np.where(rng.random(num_det) < 0.7, gt_classes[src],
                                rng.integers(1, num_classes + 1, size=num_det))
        obj_scores = rng.uniform(0.05, 1, size=num_det).astype(np.float32)
    else:
        num_det = num_gt_obj
        src = np.arange(num_gt_obj)
        pred_boxes = gt_boxes.copy()
        pred_classes = np.where(rng.random(num_det) < 0.7, gt_classes,
                                rng.integers(1, num_classes + 1, size=num_det))
        obj_scores = (np.ones(num_det) if mode == 'predcls' else
                      rng.uniform(0.05, 1, size=num_det)).astype(np.float32)
    ii, jj = np.nonzero(~np.eye(num_det, dtype=bool))
    pick = rng.permutation(len(ii))[:num_pairs]
    pred_rel_inds = np.column_stack((ii[pick], jj[pick]))
    if case == 'no_pairs':
        pred_rel_inds = pred_rel_inds[:0]
    elif case == 'pair_00':
        pred_rel_inds = np.zeros((1, 2), dtype=np.int64)    # SGB's pair for < 2 boxes
    if case == 'frequency':
        cls = gt_classes if mode == 'predcls' else pred_classes
        rel_scores = prior[cls[pred_rel_inds[:, 0]], cls[pred_rel_inds[:, 1]]]
    else:
        logits = rng.normal(0, 1, size=(len(pred_rel_inds), num_rel)).astype(np.float32)
        # make GT predicates likely on pairs whose boxes come from GT pairs (the predicate of
        # the last GT row of that pair)
        gt_keys = gt_rels[:, 0] * num_gt_obj + gt_rels[:, 1]
        keys, last = np.unique(gt_keys[::-1], return_index=True)
        pred_keys = src[pred_rel_inds[:, 0]] * num_gt_obj + src[pred_rel_inds[:, 1]]
        pos = np.minimum(np.searchsorted(keys, pred_keys), max(len(keys) - 1, 0))
        rows = np.flatnonzero(keys[pos] == pred_keys) if len(keys) else np.zeros(0, int)
        rows = rows[rng.random(len(rows)) < 0.6]
        logits[rows, gt_rels[len(gt_keys) - 1 - last[pos[rows]], 2]] += 4.0
        logits[:, 0] += 2.0
        rel_scores = np.exp(logits - logits.max(1, keepdims=True))
        rel_scores /= rel_scores.sum(1, keepdims=True)
    # rows in the relation head's order: max fg prob * obj_s * obj_o, descending
    if len(pred_rel_inds):
        triple = rel_scores[:, 1:].max(1) * obj_scores[pred_rel_inds[:, 0]] * \
            obj_scores[pred_rel_inds[:, 1]]
        order = np.argsort(-triple, kind='stable')
        pred_rel_inds, rel_scores = pred_rel_inds[order], rel_scores[order]
    return dict(gt_boxes=gt_boxes, gt_classes=gt_classes.astype(np.int64),
                gt_rels=gt_rels.astype(np.int64), pred_boxes=pred_boxes.astype(np.float32),
                pred_classes=pred_classes.astype(np.int64), obj_scores=obj_scores,
                pred_rel_inds=pred_rel_inds.astype(np.int64),
                rel_scores=rel_scores.astype(np.float32))


def make_zeroshot(rng, num_rel, num_classes=150, rows=6000):
    return np.unique(np.column_stack((rng.integers(1, num_classes + 1, rows),
                                      rng.integers(1, num_classes + 1, rows),
                                      rng.integers(1, num_rel, rows))), axis=0)


def run(mode, num_images, num_pairs, num_rel, seed, quirks, chunk=50, num_classes=150,
        progress=False):
    """Time both evaluators on the same images; returns (t_sgb, t_ovkit, sgb, ovkit).

    With ``quirks`` the images cycle through :data:`QUIRKS` (special cases and plain ones).
    """
    rng = np.random.default_rng(seed)
    zs = make_zeroshot(rng, num_rel, num_classes,
                       rows=min(6000, max(50, num_classes ** 2 * (num_rel - 1) // 10)))
    prior = rng.dirichlet(np.full(num_rel, 0.3), size=(num_classes + 1, num_classes + 1)
                          ).astype(np.float32)
    sgb = SGBEvaluator(mode, num_rel, zs)
    zs_set = TripletSet(zs)
    records = []
    t_sgb = t_ours = 0.0
    for start in range(0, num_images, chunk):
        images = [make_image(rng, mode, num_pairs, num_rel, num_classes,
                             QUIRKS[i % len(QUIRKS)] if quirks else None, prior)
                  for i in range(start, min(start + chunk, num_images))]
        t0 = time.perf_counter()
        for img in images:
            sgb.evaluate_relation_of_one_image(img, img)
        t1 = time.perf_counter()
        records.extend(evaluate_image(img, mode, 0.5, TOPKS, zs_set) for img in images)
        t2 = time.perf_counter()
        t_sgb += t1 - t0
        t_ours += t2 - t1
        done = start + len(images)
        if progress and (done % 500 == 0 or done == num_images):
            print(f'  [{mode}] {done}/{num_images} images: SGB {t_sgb:.1f} s, ovkit '
                  f'{t_ours:.2f} s', file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    ours = summarize(records, num_rel - 1, TOPKS, with_zeroshot=True,
                     with_accuracy=mode != 'sgdet')
    t_ours += time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = sgb.results()
    t_sgb += time.perf_counter() - t0
    return t_sgb, t_ours, ref, ours


def compare(ref, ours, tol=0.0):
    """Names of the metrics whose values differ by more than ``tol`` (default: any bit)."""
    bad = []
    for name, v in ref.items():
        w = ours[name]
        if not ((np.isnan(v) and np.isnan(w)) or abs(v - w) <= tol):
            bad.append(f'{name}: SGB {v!r} vs ovkit {w!r}')
    return bad


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=int, default=5000)
    parser.add_argument('--pairs', type=int, default=4096, help='candidate pairs per image')
    parser.add_argument('--predicates', type=int, default=51, help='incl. background')
    parser.add_argument('--mode', default='sgdet', choices=MODES + ('all',))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--quick', action='store_true',
                        help='small sizes, all modes, the special cases; checks equal numbers')
    args = parser.parse_args(argv)
    if args.quick:
        settings = [(m, 20, 300, args.predicates, args.seed + i, True, 12)
                    for i, m in enumerate(MODES)]
    else:
        modes = MODES if args.mode == 'all' else (args.mode,)
        settings = [(m, args.images, args.pairs, args.predicates, args.seed, False, 150)
                    for m in modes]
    failed = False
    for mode, n, pairs, num_rel, seed, quirks, num_classes in settings:
        t_sgb, t_ours, ref, ours = run(mode, n, pairs, num_rel, seed, quirks,
                                       num_classes=num_classes, progress=not args.quick)
        bad = compare(ref, ours)
        print(f'[{mode}] {n} images x {pairs} pairs x {num_rel} predicates: '
              f'SGB per-image evaluator {t_sgb:.2f} s, ovkit {t_ours:.2f} s, '
              f'ratio {t_sgb / max(t_ours, 1e-9):.1f}x')
        print('    ' + '  '.join(f'{k}={ours[k]:.4f}' for k in ref if k.endswith('@100')))
        if bad:
            failed = True
            print('    MISMATCH:\n      ' + '\n      '.join(bad))
        else:
            print(f'    all {len(ref)} numbers equal to SGB\'s')
    if failed:
        sys.exit(1)


if __name__ == '__main__':
    main()
