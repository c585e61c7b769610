"""OVCocoAP50Metric (novel/base/all AP50) against hand-computed APs, and mmdet's LVISMetric on LVIS.

Hand computation, COCO style: detections of a class sorted by score give a precision/recall
curve; precision is made non-increasing from the right and read at the 101 recall points
0, 0.01, ..., 1 (first detection reaching each recall); AP is the mean of the 101 values.
"""
import json

import numpy as np
import pytest
import torch
from mmdet.evaluation.metrics import LVISMetric
from mmdet.registry import METRICS
from mmdet.utils import register_all_modules

import ovkit  # noqa: F401  (compat: lvis on numpy 2)
from ovkit.baron.metric import OVCocoAP50Metric

CLASSES = ('alpha', 'bravo', 'charlie', 'delta', 'echo')
CAT_IDS = (1, 3, 5, 7, 9)  # non-contiguous, as in COCO
NOVEL = ('bravo', 'charlie', 'echo')


def _ann(i, img, cat, box):
    return dict(id=i, image_id=img, category_id=cat, bbox=box, area=box[2] * box[3], iscrowd=0)


GT_ANNS = [
    _ann(1, 1, 1, [10, 10, 30, 30]),  # alpha
    _ann(2, 1, 3, [50, 50, 20, 20]),  # bravo
    _ann(3, 2, 5, [40, 40, 30, 30]),  # charlie
    _ann(4, 2, 7, [10, 60, 20, 20]),  # delta, 2 GT
    _ann(5, 3, 7, [60, 10, 30, 20]),  # delta
]                                     # echo: no ground truth
# (image, category, xywh, score)
DETS = [
    # alpha: the only detection, IoU 28*30/(2*900-840) = 0.875: a TP at IoU 0.5 -> AP50 1.0
    # (but a FP at IoU 0.9 and 0.95, so alpha's AP@[.5:.95] is 0.8, not 1).
    (1, 1, [12, 10, 30, 30], .9),
    # bravo: FP (other image) ranked above the TP: precision 0, 1/2 at recall 0, 1;
    # made non-increasing: 0.5 at every recall point -> AP50 0.5.
    (2, 3, [5, 5, 20, 20], .95), (1, 3, [50, 50, 20, 20], .6),
    # charlie: only a box with IoU 15*30/(2*900-450) = 1/3 < 0.5 -> AP50 0.
    (2, 5, [55, 40, 30, 30], .8),
    # delta: TP, FP, TP: (recall, precision) = (.5, 1), (.5, .5), (1, 2/3) -> 1 at the 51
    # recall points 0..0.50, 2/3 at the 50 points 0.51..1 -> AP50 (51 + 50 * 2/3) / 101.
    (3, 7, [60, 10, 30, 20], .9), (3, 7, [0, 0, 10, 10], .8), (2, 7, [10, 60, 20, 20], .7),
    # echo: a detection but no ground truth -> no AP, left out of every mean.
    (3, 9, [30, 30, 10, 10], .5),
]
AP50 = dict(alpha=1.0, bravo=0.5, charlie=0.0, delta=(51 + 50 * 2 / 3) / 101)
NOVEL_AP50 = (AP50['bravo'] + AP50['charlie']) / 2
BASE_AP50 = (AP50['alpha'] + AP50['delta']) / 2
ALL_AP50 = sum(AP50.values()) / 4


def _write_gt(path, split_field=True, categories=None):
    cats = categories or [dict(id=i, name=n, supercategory='x') for i, n in zip(CAT_IDS, CLASSES)]
    if split_field:
        cats = [dict(c, split='novel' if c['name'] in NOVEL else 'base') for c in cats]
    images = [dict(id=i, width=100, height=100, file_name=f'{i}.jpg') for i in (1, 2, 3)]
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=GT_ANNS, categories=cats), f)
    return str(path)


def _samples(dets, img_ids=(1, 2, 3), size=100):
    """mmdet-style data samples: xyxy boxes, labels = index in the dataset classes."""
    out = []
    for img in img_ids:
        mine = [d for d in dets if d[0] == img]
        boxes = [[x, y, x + w, y + h] for _, _, (x, y, w, h), _ in mine]
        out.append(dict(img_id=img, ori_shape=(size, size), pred_instances=dict(
            bboxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            scores=torch.tensor([d[3] for d in mine], dtype=torch.float32),
            labels=torch.tensor([CAT_IDS.index(d[1]) for d in mine], dtype=torch.long))))
    return out


def _evaluate(metric, samples, classes=CLASSES):
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, samples)
    return metric.evaluate(len(samples))


@pytest.fixture(scope='module', autouse=True)
def _mmdet_scope():
    register_all_modules(init_default_scope=True)


def test_registered_in_mmdet_without_clash():
    assert METRICS.get('OVCocoAP50Metric') is OVCocoAP50Metric
    assert OVCocoAP50Metric.__module__ == 'ovkit.baron.metric'
    # mmdet 3.3 has an `OVCocoMetric` of its own (a different protocol): left untouched.
    assert METRICS.get('OVCocoMetric').__module__.startswith('mmdet.')


@pytest.mark.parametrize('split_field', [False, True], ids=['novel_classes-arg', 'split-field'])
def test_novel_base_all_ap50_by_hand(tmp_path, split_field):
    ann = _write_gt(tmp_path / 'gt.json', split_field=split_field)
    cfg = dict(type='OVCocoAP50Metric', ann_file=ann)
    if not split_field:
        cfg['novel_classes'] = list(NOVEL)
    res = _evaluate(METRICS.build(cfg), _samples(DETS))
    assert res['coco/novel_ap50'] == pytest.approx(NOVEL_AP50, abs=1e-9)  # 0.25
    assert res['coco/base_ap50'] == pytest.approx(BASE_AP50, abs=1e-9)  # 0.91749
    assert res['coco/all_ap50'] == pytest.approx(ALL_AP50, abs=1e-9)  # 0.58375
    # CocoMetric's own results are kept; its AP50 over all classes is the same number, got
    # by pycocotools' summarize (rounded to 3 decimals), and its AP@[.5:.95] is lower
    # because alpha's box has IoU 0.875.
    assert res['coco/bbox_mAP_50'] == round(ALL_AP50, 3)
    assert res['coco/bbox_mAP'] == round((0.8 + 0.5 + 0 + AP50['delta']) / 4, 3)


def test_ground_truth_from_data_samples():
    """Without ann_file CocoMetric builds its json from the samples' `instances` (labels as
    category ids, no `split`): novel_classes gives the split, the numbers are the same."""
    samples = _samples(DETS)
    for s in samples:
        s['instances'] = [dict(bbox=[x, y, x + w, y + h], ignore_flag=0,
                               bbox_label=CAT_IDS.index(a['category_id']))
                          for a in GT_ANNS if a['image_id'] == s['img_id']
                          for x, y, w, h in [a['bbox']]]
    res = _evaluate(OVCocoAP50Metric(novel_classes=NOVEL), samples)
    assert res['coco/novel_ap50'] == pytest.approx(NOVEL_AP50, abs=1e-9)
    assert res['coco/base_ap50'] == pytest.approx(BASE_AP50, abs=1e-9)


def test_table_is_logged(tmp_path, capsys):
    from mmengine.logging import MMLogger
    MMLogger.get_instance('ovkit_test_metric', log_level='INFO')  # current instance
    _evaluate(OVCocoAP50Metric(ann_file=_write_gt(tmp_path / 'gt.json')), _samples(DETS))
    out = capsys.readouterr().out
    assert 'open-vocabulary box AP50' in out
    # novel: bravo, charlie, echo (2 with GT); base: alpha, delta; all: 5 (4 with GT)
    assert f'| novel | 3       | 2       | {NOVEL_AP50:.4f} |' in out
    assert f'| all   | 5       | 4       | {ALL_AP50:.4f} |' in out


def test_at_most_100_detections_per_image(tmp_path):
    """OV-COCO's AP50 keeps the 100 best detections per image; mmdet's bbox_mAP_50 keeps
    proposal_nums[2] = 1000. A TP ranked 101st counts for the latter only."""
    ann = _write_gt(tmp_path / 'gt.json')
    fps = [(1, 1, [60 + i % 10 * 3, 60 + i // 10 * 3, 5, 5], .9 - i * 1e-3) for i in range(100)]
    dets = fps + [(1, 1, [10, 10, 30, 30], .1)]
    res = _evaluate(OVCocoAP50Metric(ann_file=ann, novel_classes=NOVEL), _samples(dets))
    assert res['coco/base_ap50'] == 0.0  # alpha: AP 0 (TP dropped); delta: no detection
    assert res['coco/novel_ap50'] == 0.0 and res['coco/all_ap50'] == 0.0
    # 1000 detections: alpha's TP at rank 101 -> precision 1/101 at every recall point.
    assert res['coco/bbox_mAP_50'] == round((1 / 101) / 4, 3)


def test_no_detection_at_all(tmp_path):
    ann = _write_gt(tmp_path / 'gt.json')
    res = _evaluate(OVCocoAP50Metric(ann_file=ann), _samples([]))
    assert (res['coco/novel_ap50'], res['coco/base_ap50'], res['coco/all_ap50']) == (0, 0, 0)


def test_empty_split_is_nan(tmp_path):
    ann = _write_gt(tmp_path / 'gt.json', split_field=False)
    res = _evaluate(OVCocoAP50Metric(ann_file=ann, novel_classes=['echo']), _samples(DETS))
    assert np.isnan(res['coco/novel_ap50'])  # echo has no ground truth
    assert res['coco/base_ap50'] == pytest.approx(ALL_AP50, abs=1e-9)


def test_shapes_val_split_field(tmp_path):
    """ovkit's shapes val.json carries `split`; base boxes predicted exactly, novel ones not."""
    from ovkit.shapes import NOVEL_CLASSES, SHAPE_CLASSES, make_coco_shapes
    paths = make_coco_shapes(str(tmp_path), num_train=1, num_val=8, size=96, seed=1)
    val = json.load(open(paths['val']))
    name_of = {c['id']: c['name'] for c in val['categories']}
    label_of = {c['id']: SHAPE_CLASSES.index(c['name']) for c in val['categories']}
    with_gt = {name_of[a['category_id']] for a in val['annotations']}
    assert with_gt & set(NOVEL_CLASSES) and with_gt - set(NOVEL_CLASSES)
    samples = []
    for im in val['images']:
        base = [a for a in val['annotations'] if a['image_id'] == im['id']
                and name_of[a['category_id']] not in NOVEL_CLASSES]
        samples.append(dict(img_id=im['id'], ori_shape=(96, 96), pred_instances=dict(
            bboxes=torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                                 (a['bbox'] for a in base)]).reshape(-1, 4),
            scores=torch.ones(len(base)),
            labels=torch.tensor([label_of[a['category_id']] for a in base], dtype=torch.long))))
    res = _evaluate(OVCocoAP50Metric(ann_file=paths['val']), samples, classes=SHAPE_CLASSES)
    assert res['coco/base_ap50'] == pytest.approx(1.0)
    assert res['coco/novel_ap50'] == 0.0
    n_novel = len(with_gt & set(NOVEL_CLASSES))
    assert res['coco/all_ap50'] == pytest.approx((len(with_gt) - n_novel) / len(with_gt))


# ------------------------------------------------------------------------- clear errors
def test_unknown_novel_class_name(tmp_path):
    metric = OVCocoAP50Metric(ann_file=_write_gt(tmp_path / 'gt.json'),
                              novel_classes=['bravo', 'zulu'])
    with pytest.raises(ValueError, match=r"novel_classes \['zulu'\] are not among the dataset "
                                         r"classes \['alpha'.*fix novel_classes"):
        metric.dataset_meta = dict(classes=CLASSES)


def test_missing_split_field(tmp_path):
    metric = OVCocoAP50Metric(ann_file=_write_gt(tmp_path / 'gt.json', split_field=False))
    with pytest.raises(ValueError, match=r"must carry 'split'.*'alpha': None.*make_ov_splits"):
        metric.dataset_meta = dict(classes=CLASSES)


def test_no_source_of_novel_classes():
    with pytest.raises(ValueError, match=r'novel_classes=None needs ann_file='):
        OVCocoAP50Metric()
    with pytest.raises(ValueError, match=r"has no 'bbox'"):
        OVCocoAP50Metric(metric='segm', novel_classes=['a'])


# ------------------------------------------------------------------------- LVIS (mmdet's own)
LVIS_FREQ = {1: 'r', 2: 'c', 3: 'f', 4: 'r', 5: 'c', 6: 'f'}


def _lvis_gt(path):
    cats = [dict(id=c, name=f'cat{c}', synset=f'cat{c}.n.01', frequency=f, image_count=1,
                 instance_count=1) for c, f in LVIS_FREQ.items()]
    images = [dict(id=i, width=100, height=100, coco_url=f'http://x/{i:012d}.jpg',
                   neg_category_ids=[], not_exhaustive_category_ids=[]) for i in (1, 2)]
    anns = []
    for c in LVIS_FREQ:  # one box per category: categories 1-3 in image 1, 4-6 in image 2
        x, y, w, h = 5 + 15 * ((c - 1) % 3), 10 + 5 * c, 12, 20
        anns.append(dict(id=c, image_id=1 + (c - 1) // 3, category_id=c, bbox=[x, y, w, h],
                         area=w * h, segmentation=[[x, y, x + w, y, x + w, y + h, x, y + h]]))
    images[0]['neg_category_ids'] = [4]  # category 4 is verified absent from image 1
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)
    return str(path), anns


def _lvis_samples(anns, shift_cats=()):
    out = []
    for img in (1, 2):
        mine = [a for a in anns if a['image_id'] == img]
        boxes = [[x + (20 if a['category_id'] in shift_cats else 0), y,
                  x + w + (20 if a['category_id'] in shift_cats else 0), y + h]
                 for a in mine for x, y, w, h in [a['bbox']]]
        out.append(dict(img_id=img, ori_shape=(100, 100), pred_instances=dict(
            bboxes=torch.tensor(boxes, dtype=torch.float32),
            scores=torch.full((len(mine),), 0.9),
            labels=torch.tensor([a['category_id'] - 1 for a in mine]))))  # cat_ids = 1..6
    return out


def test_mmdet_lvis_metric_reports_rare_common_frequent(tmp_path):
    ann, anns = _lvis_gt(tmp_path / 'lvis_val.json')
    classes = tuple(f'cat{c}' for c in LVIS_FREQ)
    res = _evaluate(LVISMetric(ann_file=ann), _lvis_samples(anns), classes)
    for k in ('bbox_AP', 'bbox_AP50', 'bbox_APr', 'bbox_APc', 'bbox_APf'):
        assert res[f'lvis/{k}'] == 1.0, k
    # Shift both rare boxes off their object (IoU 0 with width 12): APr drops to 0 while
    # APc and APf stay 1, so the groups really follow `frequency`.
    res = _evaluate(LVISMetric(ann_file=ann), _lvis_samples(anns, shift_cats=(1, 4)), classes)
    assert (res['lvis/bbox_APr'], res['lvis/bbox_APc'], res['lvis/bbox_APf']) == (0.0, 1.0, 1.0)
    assert res['lvis/bbox_AP'] == round(4 / 6, 3)
