"""Hand-computed cases for the SGB-exact metric core (every metric, every mode)."""
import numpy as np
import pytest

from ovkit.sgg.boxes import box_iou
from ovkit.sgg.evaluation import (
    TripletSet,
    evaluate_image,
    evaluate_sgg,
    sgb_nogc_order,
    summarize,
    topk_flat_desc,
)

# three well separated GT boxes; classes 1, 2, 3
BOXES = np.array([[0, 0, 9, 9], [20, 0, 29, 9], [40, 0, 49, 9]], dtype=np.float32)
CLASSES = np.array([1, 2, 3])


def scores(*rows):
    """rel_scores rows [bg, p1, p2, p3] in float32 (powers of two: exact ties)."""
    return np.array(rows, dtype=np.float32)


def image(gt_rels, pred_rel_inds, rel_scores, pred_boxes=BOXES, pred_classes=CLASSES,
          obj_scores=None):
    return dict(gt_boxes=BOXES, gt_classes=CLASSES, gt_rels=np.array(gt_rels).reshape(-1, 3),
                pred_boxes=pred_boxes, pred_classes=np.asarray(pred_classes),
                obj_scores=(np.ones(len(pred_boxes), np.float32) if obj_scores is None
                            else np.asarray(obj_scores, np.float32)),
                pred_rel_inds=np.array(pred_rel_inds).reshape(-1, 2),
                rel_scores=np.asarray(rel_scores, np.float32))


def run(imgs, mode='predcls', topks=(1, 2, 3), zs=None, num_predicates=3):
    recs = [evaluate_image(im, mode, 0.5, topks, zs) for im in imgs]
    return summarize(recs, num_predicates, topks, with_zeroshot=zs is not None,
                     with_accuracy=mode != 'sgdet')


# GT: (0 -p1-> 1), (1 -p2-> 2), (0 -p1-> 2)
GT = [[0, 1, 1], [1, 2, 2], [0, 2, 1]]
PAIRS = [[0, 1], [1, 2], [0, 2], [2, 0]]
SCORES = scores(
    [0.0, 0.5, 0.125, 0.125],     # (0,1): argmax p1 -> GT0
    [0.0, 0.25, 0.25, 0.25],      # (1,2): tie, first argmax p1 -> wrong (GT is p2)
    [0.0, 0.375, 0.0625, 0.0],    # (0,2): p1 -> GT2
    [0.0, 0.25, 0.0, 0.0])        # (2,0): nothing


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_graph_constraint_recall_first_argmax_rows_in_given_order(mode):
    res = run([image(GT, PAIRS, SCORES)], mode)
    # rows in the given order: hits after 1, 2, 3 rows = 1, 1, 2 of 3
    assert res['R@1'] == pytest.approx(1 / 3)
    assert res['R@2'] == pytest.approx(1 / 3)       # the tie picks p1, not the GT's p2
    assert res['R@3'] == pytest.approx(2 / 3)
    assert res['num_images'] == 1
    assert ('A@1' in res) == (mode != 'sgdet')


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_no_graph_constraint_order_and_ties(mode):
    # all (pair, predicate) by score: .5 (r0,p1) GT0 | .375 (r2,p1) GT2 | then the tie at .25
    # of (r1,p1) (r1,p2)=GT1 (r1,p3) (r3,p1), in the order SGB's np.argsort gives them
    res = run([image(GT, PAIRS, SCORES)], mode, topks=(1, 2, 3, 4, 5, 6, 7))
    sgb = np.argsort(-SCORES[:, 1:].ravel())[:7]          # sgg_eval.py's argsort_desc
    assert sgb_nogc_order(SCORES[:, 1:], 7).tolist() == sgb.tolist()
    assert [divmod(int(i), 3) for i in sgb[:2]] == [(0, 0), (2, 0)]
    gt1_at = [divmod(int(i), 3) for i in sgb].index((1, 1))     # GT1 is among the tied four
    assert 2 <= gt1_at <= 5
    expect = [1 / 3, 2 / 3] + [2 / 3 if k <= gt1_at else 1.0 for k in range(3, 8)]
    assert [res[f'ngR@{k}'] for k in range(1, 8)] == pytest.approx(expect)


def test_sgb_nogc_order_is_sgbs_argsort_including_ties():
    rng = np.random.default_rng(0)
    for trial in range(30):
        m, c = int(rng.integers(1, 400)), int(rng.integers(1, 60))
        if trial % 3 == 0:
            s = rng.integers(0, 6, size=(m, c)).astype(np.float32) / 8      # many ties
        elif trial % 3 == 1:
            s = rng.random((m, c)).astype(np.float32)                      # no ties
        else:                               # frequency-like: pairs share their score rows
            s = rng.random((5, c)).astype(np.float32)[rng.integers(0, 5, m)]
        for k in (1, 20, 100):
            np.testing.assert_array_equal(sgb_nogc_order(s, k), np.argsort(-s.ravel())[:k])


def sgb_ng_recall(img, ks):
    """SGB's SGNoGraphConstraintRecall for PredCls on boxes that do not overlap each other
    (a predicted triplet matches a GT triplet exactly when pair and predicate are equal)."""
    ng = np.ones(len(img['gt_classes']))[img['pred_rel_inds']].prod(1)[:, None] * \
        img['rel_scores'][:, 1:]
    inds = np.column_stack(np.unravel_index(np.argsort(-ng.ravel()), ng.shape))[:100]
    pred = np.column_stack((img['pred_rel_inds'][inds[:, 0]], inds[:, 1] + 1))
    gt = [tuple(r) for r in img['gt_rels']]
    return {k: sum(any(tuple(p) == g for p in pred[:k]) for g in gt) / len(gt) for k in ks}


def test_ties_of_a_frequency_predictor_ranked_as_sgb():
    """PredCls with a frequency-only predictor: every pair of a class pair has the same
    scores, so the best 100 (pair, predicate) entries are full of ties."""
    rng = np.random.default_rng(3)
    prior = rng.dirichlet(np.ones(51) * 0.3, size=(4, 4)).astype(np.float32)
    imgs = []
    for _ in range(8):
        n = 24
        grid = np.arange(n)
        boxes = np.column_stack((grid % 6 * 20, grid // 6 * 20, grid % 6 * 20 + 9,
                                 grid // 6 * 20 + 9)).astype(np.float32)
        classes = rng.integers(1, 4, n)
        ii, jj = np.nonzero(~np.eye(n, dtype=bool))
        pairs = np.column_stack((ii, jj))
        rs = prior[classes[ii], classes[jj]]
        order = np.argsort(-rs[:, 1:].max(1), kind='stable')
        gt_pairs = pairs[rng.choice(len(pairs), 30, replace=False)]
        gt = np.column_stack((gt_pairs, rng.integers(1, 51, 30)))
        imgs.append(dict(gt_boxes=boxes, gt_classes=classes, gt_rels=gt, pred_boxes=boxes,
                         pred_classes=classes, obj_scores=np.ones(n, np.float32),
                         pred_rel_inds=pairs[order], rel_scores=rs[order]))
        top = np.sort(rs[:, 1:].ravel())[::-1][:101]
        assert len(np.unique(top)) < 50                 # the case is tie-heavy
    res = evaluate_sgg(imgs, 'predcls', 50, topks=(20, 50, 100))
    ref = [sgb_ng_recall(im, (20, 50, 100)) for im in imgs]
    for k in (20, 50, 100):
        assert res[f'ngR@{k}'] == np.mean([r[k] for r in ref])


def test_topk_flat_desc_matches_a_full_stable_sort():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m, c = rng.integers(1, 300), rng.integers(1, 60)
        s = rng.integers(0, 8, size=(m, c)).astype(np.float32)     # many ties
        k = int(rng.integers(1, 150))
        expect = np.argsort(-s.ravel(), kind='stable')[:k]
        np.testing.assert_array_equal(topk_flat_desc(s, k), expect)


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_duplicate_gt_triplets_are_all_matched_by_one_prediction(mode):
    gt = [[0, 1, 1], [0, 1, 1], [0, 1, 2]]
    res = run([image(gt, [[0, 1]], scores([0, 0.5, 0.25, 0]))], mode, topks=(1, 2))
    assert res['R@1'] == pytest.approx(2 / 3)           # one row, two identical GT
    assert res['ngR@1'] == pytest.approx(2 / 3)
    assert res['ngR@2'] == pytest.approx(1.0)           # (0,1,p2) is the second entry
    # mR: p1 2/2, p2 0/1 at K=1; p3 never in GT still counts as 0
    assert res['mR@1'] == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert res['ng-mR@2'] == pytest.approx((1.0 + 1.0 + 0.0) / 3)


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_images_without_gt_relations_or_predicted_pairs_are_skipped(mode):
    good = image(GT, PAIRS, SCORES)
    no_gt = image(np.zeros((0, 3), int), PAIRS, SCORES)
    no_pred = image(GT, np.zeros((0, 2), int), np.zeros((0, 4), np.float32))
    res = run([good, no_gt, no_pred], mode)
    assert res['num_images'] == 1
    assert res['R@3'] == pytest.approx(2 / 3)           # not (2/3 + 0) / 2
    assert res['mR@3'] == pytest.approx((2 / 2 + 0 / 1 + 0) / 3)   # p1 GT0+GT2; p2 missed
    assert np.isnan(run([no_gt, no_pred], mode)['R@1'])
    assert evaluate_image(no_gt, mode) is None
    assert evaluate_image(no_pred, mode) is None


def test_predcls_uses_gt_boxes_labels_and_object_scores_of_one():
    gt = [[0, 1, 1]]
    pairs = [[0, 1], [1, 2]]
    rs = scores([0, 0.5, 0, 0], [0, 0.25, 0, 0])
    wrong = dict(pred_boxes=BOXES + 100, pred_classes=[3, 3, 3], obj_scores=[0.125, 1, 1])
    # PredCls ignores the predicted boxes, classes and object scores
    pc = run([image(gt, pairs, rs, **wrong)], 'predcls', topks=(1, 2))
    assert pc['R@1'] == 1.0 and pc['ngR@1'] == 1.0
    # SGCls with right boxes/classes: ng ranks by obj_s * obj_o * p, so (0,1) at .0625
    # falls behind (1,2) at .25
    sg = run([image(gt, pairs, rs, obj_scores=[0.125, 1, 1])], 'sgcls', topks=(1, 2))
    assert sg['R@1'] == 1.0                             # R@K keeps the given row order
    assert sg['ngR@1'] == 0.0 and sg['ngR@2'] == 1.0
    # SGCls with wrong classes matches nothing
    assert run([image(gt, pairs, rs, pred_classes=[3, 3, 3])], 'sgcls')['R@3'] == 0.0


def test_sgdet_iou_uses_plus_one_widths():
    gt = [[0, 1, 1]]
    # subject box [0,0,9,4] vs GT [0,0,9,9]: +1 IoU = 50/100 = 0.5 (matches);
    # without +1 it would be 36/81 < 0.5
    pred_boxes = BOXES.copy()
    pred_boxes[0] = [0, 0, 9, 4]
    res = run([image(gt, [[0, 1]], scores([0, 1, 0, 0]), pred_boxes=pred_boxes)], 'sgdet')
    assert res['R@1'] == 1.0
    assert box_iou(BOXES[:1], pred_boxes[:1])[0, 0] == np.float32(0.5)
    pred_boxes[0] = [0, 0, 9, 3]                        # 40/100
    assert run([image(gt, [[0, 1]], scores([0, 1, 0, 0]), pred_boxes=pred_boxes)],
               'sgdet')['R@1'] == 0.0
    pred_boxes[0] = [0.0, 0.0, 9.0, 4.0]
    pred_boxes[1] = [22, 0, 31, 9]                      # object IoU 80/120 >= 0.5
    assert run([image(gt, [[0, 1]], scores([0, 1, 0, 0]), pred_boxes=pred_boxes)],
               'sgdet')['R@1'] == 1.0


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_mean_recall_averages_per_image_lists_over_all_predicates(mode):
    # image A: GT p1, p1, p2; the first row hits one p1, the second the p2
    a = image([[0, 1, 1], [0, 2, 1], [1, 2, 2]], [[0, 1], [1, 2]],
              scores([0, 1, 0, 0], [0, 0, 1, 0]))
    # image B: GT p1, hit
    b = image([[0, 1, 1]], [[0, 1]], scores([0, 1, 0, 0]))
    res = run([a, b], mode, topks=(2,))
    # p1: mean(1/2, 1/1) = 0.75; p2: mean(1/1) = 1; p3: never in GT -> 0, still counted
    assert res['mR@2'] == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    np.testing.assert_allclose(res['per_predicate']['mR@2'], [0.75, 1.0, 0.0])
    np.testing.assert_array_equal(res['gt_count'], [3, 1, 0])
    assert res['R@2'] == pytest.approx((2 / 3 + 1) / 2)     # mean of per-image recalls


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_zero_shot_recall(mode):
    # zero-shot triplets are (subject class, object class, predicate); GT2 = (1, 3, p1) is one
    zs = np.array([[1, 3, 1], [2, 2, 2]])
    img = image(GT, PAIRS, SCORES)
    res = run([img, image([[1, 2, 2]], PAIRS, SCORES)], mode, zs=zs, topks=(1, 2, 3))
    # only the first image has a zero-shot GT (row 2, found by the third row / the second
    # ng entry); the second image has none and is skipped for zR
    assert [res[f'zR@{k}'] for k in (1, 2, 3)] == [0.0, 0.0, 1.0]
    assert [res[f'ng-zR@{k}'] for k in (1, 2, 3)] == [0.0, 1.0, 1.0]
    assert res['num_zeroshot_images'] == 1
    assert np.isnan(run([img], mode, zs=np.array([[3, 3, 3]]))['zR@1'])
    assert TripletSet(zs).contains(np.array([[1, 3, 1], [3, 1, 1]])).tolist() == [True, False]


def test_pair_accuracy_counts_first_k_rows_on_gt_pairs():
    # rows: (2,0) not a GT pair, (0,1) GT0 hit, (1,2) on GT pair but wrong predicate, (0,2) hit
    pairs = [[2, 0], [0, 1], [1, 2], [0, 2]]
    rs = scores([0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0])
    res = run([image(GT, pairs, rs)], 'sgcls', topks=(1, 2, 3))
    assert [res[f'R@{k}'] for k in (1, 2, 3)] == pytest.approx([0, 1 / 3, 1 / 3])
    assert [res[f'A@{k}'] for k in (1, 2, 3)] == pytest.approx([1 / 3, 1 / 3, 2 / 3])
    # A@K = mean(hits) / mean(#GT), not the mean of per-image ratios
    one = image([[0, 1, 1]], [[0, 1]], scores([0, 1, 0, 0]))
    res = run([one, image(GT, pairs, rs)], 'predcls', topks=(1,))
    assert res['A@1'] == pytest.approx(((1 + 1) / 2) / ((1 + 3) / 2))
    assert 'A@1' not in run([one], 'sgdet', topks=(1,))


def test_evaluate_sgg_default_topks_and_bad_input():
    res = evaluate_sgg([image(GT, PAIRS, SCORES)], 'predcls')
    assert res['R@20'] == pytest.approx(2 / 3) and res['ngR@100'] == 1.0
    with pytest.raises(ValueError, match='mode'):
        evaluate_image(image(GT, PAIRS, SCORES), 'preddet')
    with pytest.raises(ValueError, match='predicates must lie in 1..3'):
        evaluate_image(image([[0, 1, 4]], PAIRS, SCORES), 'predcls')


@pytest.mark.parametrize('field, value, match', [
    ('pred_rel_inds', [[0, 5], [1, 2]], r'pred_rel_inds indexes predicted boxes 0..5, but '
                                        r'there are 3'),
    ('pred_rel_inds', [[0, -1], [1, 2]], 'pred_rel_inds indexes'),
    ('rel_scores', np.full((3, 4), .25, np.float32), r'rel_scores must have shape \[M, P \+ 1\]'
                                                     r' = \[2, P \+ 1\].*got \(3, 4\)'),
    ('rel_scores', np.full(8, .25, np.float32), r'rel_scores must have shape .* got \(8,\)'),
    ('rel_scores', np.full((2, 1), 1.0, np.float32), 'rel_scores must have shape'),
    ('rel_scores', np.array([[np.nan] * 4, [0, 1, 0, 0]], np.float32),
     r'rel_scores has non-finite values \(first at index \(0, 0\)'),
    ('obj_scores', np.array([1, np.inf, 1], np.float32), 'obj_scores has non-finite'),
    ('pred_boxes', np.array([[0, 0, 9, np.nan]] + [[0, 0, 9, 9]] * 2, np.float32),
     'pred_boxes has non-finite'),
    ('pred_classes', np.array([1]), r'pred_classes must have shape \[3\]'),
    ('pred_boxes', np.zeros((3, 5), np.float32), r'pred_boxes must have shape \[N, 4\]'),
    ('gt_rels', [[0, 7, 1]], 'gt_rels.* indexes GT boxes 0..7, but there are 3'),
    ('gt_classes', np.array([0, 1, 2]), 'gt_classes must be 1-based'),
    ('gt_classes', np.array([1.5, 2, 3]), 'gt_classes must hold integers'),
])
def test_malformed_input_is_a_clear_error(field, value, match):
    img = image([[0, 1, 1]], [[0, 1], [1, 2]], np.full((2, 4), .25, np.float32))
    img[field] = value
    with pytest.raises(ValueError, match=match) as err:
        evaluate_sgg([img], 'sgdet', 3, topks=(1,))
    assert 'SGG evaluation of image 0' in str(err.value)


def test_predcls_pairs_must_index_the_gt_boxes():
    # PredCls evaluates on the GT boxes (SGB replaces the predicted ones), so its pairs index
    # them; predicted boxes, classes and scores are not read
    img = image([[0, 1, 1]], [[0, 3]], scores([0, 1, 0, 0]),
                pred_boxes=np.zeros((4, 4), np.float32), pred_classes=[1, 2, 3, 1])
    with pytest.raises(ValueError, match='GT boxes .PredCls pairs index the GT boxes'):
        evaluate_image(img, 'predcls', name='img_id=7')
    img['pred_rel_inds'] = np.array([[0, 1]])
    img['obj_scores'] = np.full(4, np.nan)
    assert evaluate_image(img, 'predcls')['hit'].tolist() == [1, 1, 1]


def test_topks_and_iou_thr_are_checked():
    img = image(GT, PAIRS, SCORES)
    with pytest.raises(ValueError, match=r'topks must be integers in 1..100, got \(20, 200\)'):
        evaluate_image(img, 'predcls', topks=(20, 200))
    with pytest.raises(ValueError, match='topks must be integers in 1..100'):
        evaluate_image(img, 'predcls', topks=(0,))
    with pytest.raises(ValueError, match=r'iou_thr must lie in \(0, 1\]'):
        evaluate_image(img, 'predcls', iou_thr=5)


def test_box_iou_is_maskrcnns_boxlist_iou_and_mmcvs_offset_1():
    """One hand-written IoU: maskrcnn-benchmark's boxlist_iou (rendered here in torch) and
    mmcv.ops.bbox_overlaps(offset=1) give the same float32 numbers."""
    import torch
    from mmcv.ops import bbox_overlaps
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (200, 2))
    b = np.concatenate([xy, xy + rng.uniform(0, 150, (200, 2))], 1).astype(np.float32)
    b = np.concatenate([b, np.round(b)])
    t = torch.from_numpy(b)
    area = (t[:, 2] - t[:, 0] + 1) * (t[:, 3] - t[:, 1] + 1)
    wh = (torch.min(t[:, None, 2:], t[:, 2:]) - torch.max(t[:, None, :2], t[:, :2]) + 1
          ).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    sgb = (inter / (area[:, None] + area - inter)).numpy()
    ours = box_iou(b, b)
    np.testing.assert_array_equal(ours, sgb)
    np.testing.assert_array_equal(ours, bbox_overlaps(t, t, offset=1).numpy())
    np.testing.assert_array_equal(box_iou(b, b[::-1], aligned=True), np.diag(sgb[:, ::-1]))
    # offset 0 (SGB's statistics): touching boxes do not overlap, +1 boxes do
    touch = np.array([[0, 0, 10, 10], [10, 0, 20, 10]], np.float32)
    assert box_iou(touch, touch, offset=0)[0, 1] == 0 and box_iou(touch, touch)[0, 1] > 0
