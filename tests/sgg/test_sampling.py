"""Pair proposal and training pair sampling: SGB's rules, checked by counting."""
import itertools

import numpy as np
import pytest
import torch

from ovkit.sgg.sampling import RelationPairSampler, box_iou_legacy


def _iou_plus1_numpy(a, b):
    out = np.zeros((len(a), len(b)))
    for i, j in itertools.product(range(len(a)), range(len(b))):
        iw = min(a[i][2], b[j][2]) - max(a[i][0], b[j][0]) + 1
        ih = min(a[i][3], b[j][3]) - max(a[i][1], b[j][1]) + 1
        inter = max(iw, 0) * max(ih, 0)
        area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
        out[i, j] = inter / (area(a[i]) + area(b[j]) - inter)
    return out


def test_box_iou_legacy_matches_plus_one_definition():
    rng = np.random.default_rng(0)
    a = np.concatenate([xy := rng.uniform(0, 50, (5, 2)), xy + rng.uniform(0, 30, (5, 2))], 1)
    b = np.concatenate([xy := rng.uniform(0, 50, (4, 2)), xy + rng.uniform(0, 30, (4, 2))], 1)
    got = box_iou_legacy(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(got, _iou_plus1_numpy(a, b), rtol=1e-6)


def test_test_pairs_all_ordered_pairs_and_placeholders():
    s = RelationPairSampler()
    boxes = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 40.]])
    pairs = s.test_pairs(boxes)
    assert sorted(map(tuple, pairs.tolist())) == [
        (i, j) for i in range(3) for j in range(3) if i != j]
    assert s.test_pairs(boxes[:1]).tolist() == [[0, 0]]
    assert s.test_pairs(boxes[:0]).shape == (0, 2)
    # SGDet with the overlap requirement: box 2 touches nobody
    s_ov = RelationPairSampler(test_require_overlap=True)
    assert sorted(map(tuple, s_ov.test_pairs(boxes, use_gt_box=False).tolist())) == [
        (0, 1), (1, 0)]


def test_gt_box_sampling_takes_all_gt_pairs_and_fills_with_background():
    torch.manual_seed(0)
    s = RelationPairSampler(batch_size_per_image=1024, positive_fraction=0.25)
    n = 6
    gt = torch.tensor([[0, 1], [2, 3], [4, 5], [1, 0]])
    preds = torch.tensor([3, 1, 2, 5])
    res = s.sample_gt_boxes(n, gt, preds)
    got = {tuple(p): int(lab) for p, lab in zip(res.pairs.tolist(), res.labels.tolist())}
    # every ordered pair i != j appears exactly once (30 < 1024)
    assert len(got) == len(res.pairs) == n * (n - 1)
    for (sub, obj), lab in zip(gt.tolist(), preds.tolist()):
        assert got.pop((sub, obj)) == lab
    assert set(got.values()) == {0}
    # the symmetric binary matrix marks the related pairs both ways
    assert res.binary.sum() == 6 and res.binary[0, 1] == res.binary[1, 0] == 1


def test_gt_box_sampling_caps_foreground_and_batch():
    torch.manual_seed(0)
    s = RelationPairSampler(batch_size_per_image=40, positive_fraction=0.25)
    n = 12
    all_pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    gt = torch.tensor(all_pairs[::3])  # 44 relations
    preds = torch.randint(1, 6, (len(gt),))
    res = s.sample_gt_boxes(n, gt, preds)
    fg = res.labels > 0
    assert int(fg.sum()) == 10  # int(40 * 0.25)
    assert len(res.pairs) == 40
    gt_set = {tuple(p): int(q) for p, q in zip(gt.tolist(), preds.tolist())}
    for p, lab in zip(res.pairs.tolist(), res.labels.tolist()):
        assert p[0] != p[1]
        if lab:
            assert gt_set[tuple(p)] == lab
        else:
            assert tuple(p) not in gt_set  # a ground-truth pair is never background
    assert len(set(map(tuple, res.pairs.tolist()))) == 40


def test_gt_box_sampling_single_box_gives_placeholder():
    s = RelationPairSampler()
    res = s.sample_gt_boxes(1, torch.zeros((0, 2), dtype=torch.long),
                            torch.zeros(0, dtype=torch.long))
    assert res.pairs.tolist() == [[0, 0]] and res.labels.tolist() == [0]


def _sgdet_scene():
    gt_boxes = torch.tensor([[0, 0, 20, 20], [40, 0, 60, 20], [0, 40, 20, 60.]])
    gt_labels = torch.tensor([1, 2, 3])
    shifts = torch.tensor([[0, 0, 0, 0], [1, 1, 1, 1], [2, 0, 2, 0.]])
    boxes, labels = [], []
    for b, lab in zip(gt_boxes, gt_labels):
        for sh in shifts:  # three good matches per ground-truth box
            boxes.append(b + sh)
            labels.append(int(lab))
    boxes.append(gt_boxes[0] + 1)  # right place, wrong label
    labels.append(2)
    boxes.append(torch.tensor([70, 70, 90, 90.]))  # background proposal
    labels.append(0)
    return gt_boxes, gt_labels, torch.stack(boxes), torch.tensor(labels)


def test_detection_sampling_matches_label_and_iou_and_caps_per_relation():
    torch.manual_seed(0)
    gt_boxes, gt_labels, boxes, labels = _sgdet_scene()
    gt_pairs = torch.tensor([[0, 1], [1, 2]])
    gt_preds = torch.tensor([4, 7])
    s = RelationPairSampler(batch_size_per_image=1024, num_sample_per_gt_rel=4)
    res = s.sample_detections(boxes, labels, gt_boxes, gt_labels, gt_pairs, gt_preds)
    fg = res.labels > 0
    # 3 x 3 = 9 matching proposal pairs per relation, at most 4 kept each
    assert int(fg.sum()) == 8
    fg_pairs = res.pairs[fg]
    for (h, t), lab in zip(fg_pairs.tolist(), res.labels[fg].tolist()):
        rel = {4: (0, 1), 7: (1, 2)}[lab]
        assert h // 3 == rel[0] and t // 3 == rel[1]  # matched boxes of the right gt objects
    # background pairs: never a background-labelled proposal (index 10), never a fg match
    bg_pairs = res.pairs[~fg]
    assert not (bg_pairs == 10).any()
    matching = {(h, t) for h in range(0, 3) for t in range(3, 6)} | {
        (h, t) for h in range(3, 6) for t in range(6, 9)}
    assert not matching & set(map(tuple, bg_pairs.tolist()))
    # 10 foreground-labelled proposals: 90 ordered pairs minus the 18 matching ones
    assert len(bg_pairs) == 90 - 18
    assert res.binary[0, 3] == res.binary[3, 0] == 1


def test_detection_sampling_prefers_high_iou_pairs():
    """SGB draws the <= 4 pairs per relation in proportion to the IoU product."""
    gt_boxes = torch.tensor([[0, 0, 20, 20], [40, 0, 60, 20.]])
    gt_labels = torch.tensor([1, 1])
    boxes = torch.tensor([[0, 0, 20, 20], [0, 0, 20, 13.5], [0, 0, 20, 14],
                          [40, 0, 60, 20], [40, 0, 60, 13.5], [40, 0, 60, 14.]])
    labels = torch.ones(6, dtype=torch.long)
    s = RelationPairSampler(num_sample_per_gt_rel=1)
    counts = {}
    torch.manual_seed(0)
    for _ in range(300):
        res = s.sample_detections(boxes, labels, gt_boxes, gt_labels, torch.tensor([[0, 1]]),
                                  torch.tensor([2]))
        pair = tuple(res.pairs[res.labels > 0][0].tolist())
        counts[pair] = counts.get(pair, 0) + 1
    iou = box_iou_legacy(gt_boxes, boxes)
    weights = {(h, t): float(iou[0, h] * iou[1, t]) for h in range(3) for t in range(3, 6)}
    total = sum(weights.values())
    for pair, w in weights.items():
        assert counts.get(pair, 0) / 300 == pytest.approx(w / total, abs=0.06)
