"""Relation head: union features, rectangle masks, losses and SGB's post-processing."""
import math

import pytest
import torch
from mmcv.ops import RoIAlign
from mmdet.registry import MODELS
from mmengine.structures import InstanceData

import ovkit.sgg  # noqa: F401
from ovkit.sgg.relation_head_features import pair_rect_masks
from tests.sgg.model_helpers import (
    FPN,
    NUM_CLASSES,
    NUM_PREDICATES,
    fake_proposals,
    relation_head_cfg,
)


def _feats(sizes=((32, 40), (16, 20), (8, 10), (4, 5), (2, 3)), batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, FPN, h, w, generator=g) for h, w in sizes)


def test_rect_masks_match_a_cell_by_cell_rule():
    boxes = torch.tensor([[0., 0., 40., 20.], [13.3, 7.7, 63.9, 47.2], [60., 40., 79., 59.]])
    pairs = torch.tensor([[0, 1], [2, 0], [1, 2]])
    h, w, s = 60, 80, 27
    masks = pair_rect_masks(boxes, pairs, (h, w), s)
    assert masks.shape == (3, 2, s, s)
    for m, (hd, tl) in enumerate(pairs.tolist()):
        for k, b in enumerate((boxes[hd], boxes[tl])):
            x1, x2 = math.floor(b[0] * s / w), math.ceil(b[2] * s / w)
            y1, y2 = math.floor(b[1] * s / h), math.ceil(b[3] * s / h)
            for y in range(s):
                for x in range(s):
                    inside = x1 <= x <= x2 and y1 <= y <= y2
                    assert masks[m, k, y, x] == float(inside), (m, k, y, x)


def test_all_levels_extractor_concatenates_every_level():
    ext = MODELS.build(dict(
        type='AllLevelsRoIExtractor',
        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2, aligned=False),
        out_channels=FPN, featmap_strides=[4, 8, 16, 32]))
    feats = _feats()
    rois = torch.tensor([[0, 2., 3., 60., 50.], [1, 10., 10., 20., 30.]])
    out = ext(feats, rois)
    assert out.shape == (2, FPN, 7, 7)
    pooled = [RoIAlign(7, 1 / s, 2, aligned=False)(f, rois)
              for f, s in zip(feats, [4, 8, 16, 32])]
    expect = ext.reduce_channel(torch.cat(pooled, 1))
    torch.testing.assert_close(out, expect)
    # a box pools from every level: changing the coarsest level changes the output
    feats2 = feats[:3] + (feats[3] + 1.0,) + feats[4:]
    assert not torch.allclose(ext(feats2, rois), out)


def test_union_feature_is_pooled_union_plus_rectangle_map():
    head = MODELS.build(relation_head_cfg())
    ext = head.union_feature_extractor.eval()
    feats = _feats()
    boxes = [torch.tensor([[4., 4., 30., 28.], [40., 6., 74., 30.]]),
             torch.tensor([[2., 2., 26., 20.], [30., 4., 60., 24.], [8., 30., 40., 60.]])]
    pairs = [torch.tensor([[0, 1], [1, 0]]), torch.tensor([[2, 0]])]
    shapes = [(96, 120), (96, 120)]
    out = ext(feats, boxes, pairs, shapes)
    assert out.shape == (3, 32)
    union = torch.tensor([[0, 4., 4., 74., 30.], [0, 4., 4., 74., 30.], [1, 2., 2., 40., 60.]])
    pooled = ext.roi_extractor(feats[:4], union)
    rect = ext.rect_conv(torch.cat([pair_rect_masks(b, p, s, 27)
                                    for b, p, s in zip(boxes, pairs, shapes)]))
    assert rect.shape == (3, FPN, 7, 7)
    torch.testing.assert_close(out, ext.fcs((pooled + rect).flatten(1)))


@pytest.mark.parametrize('mode', ['predcls', 'sgcls'])
def test_loss_terms_per_mode(mode):
    torch.manual_seed(0)
    head = MODELS.build(dict(relation_head_cfg(), mode=mode))
    head.init_weights()
    head.train()
    props = fake_proposals((4, 3), mode=mode, img_shape=(120, 128))
    rels = [InstanceData(pairs=torch.tensor([[0, 1], [2, 3]]), labels=torch.tensor([1, 4])),
            InstanceData(pairs=torch.tensor([[1, 0]]), labels=torch.tensor([2]))]
    losses = head.loss(_feats(), props, rels)
    assert set(losses) == ({'loss_rel'} if mode == 'predcls' else
                           {'loss_rel', 'loss_refine_obj'})
    assert all(torch.isfinite(v) for v in losses.values())


def test_statistics_are_required_and_loaded():
    cfg = relation_head_cfg('FrequencyPredictor')
    head = MODELS.build(cfg)
    head.init_weights()
    stats = cfg['statistics']
    torch.testing.assert_close(head.predictor.freq_bias.obj_baseline.weight,
                               torch.from_numpy(stats['pred_dist']).view(-1, NUM_PREDICATES + 1))
    # the frequency baseline reads no feature: no extractor to leave without gradient
    assert not hasattr(head, 'box_feature_extractor')
    assert not hasattr(head, 'union_feature_extractor')
    cfg['statistics'] = None
    with pytest.raises(ValueError, match='model.relation_head.statistics'):
        MODELS.build(cfg).init_weights()


def _manual_post_process(obj_logit, rel_logit, pairs):
    obj_prob = obj_logit.softmax(-1)
    obj_prob[:, 0] = 0
    s, lab = obj_prob[:, 1:].max(1)
    rel_prob = rel_logit.softmax(-1)
    rows = []
    for k, (i, j) in enumerate(pairs.tolist()):
        fg = rel_prob[k, 1:]
        rows.append((float(fg.max() * s[i] * s[j]), k))
    order = [k for _, k in sorted(rows, key=lambda r: (-r[0], r[1]))]
    return lab, s, order, rel_prob


def test_post_processing_ranks_triplets_like_sgb():
    torch.manual_seed(0)
    head = MODELS.build(dict(relation_head_cfg(), mode='sgcls'))
    prop = fake_proposals((4,), mode='sgcls', img_shape=(90, 120))[0]
    pairs = head.sampler.test_pairs(prop.bboxes)
    obj_logit = torch.randn(4, NUM_CLASSES + 1)
    rel_logit = torch.randn(len(pairs), NUM_PREDICATES + 1)
    meta = dict(scale_factor=(1.5, 1.5), img_shape=(90, 120), ori_shape=(60, 80))
    inst, rels = head._post_process(prop, obj_logit, rel_logit, pairs, meta, rescale=True)
    lab, s, order, rel_prob = _manual_post_process(obj_logit, rel_logit, pairs)
    assert torch.equal(inst.labels, lab)  # 1..C -> 0..C-1
    torch.testing.assert_close(inst.scores, s)
    torch.testing.assert_close(inst.bboxes, prop.bboxes / 1.5)
    assert torch.equal(rels.pairs, pairs[order])
    torch.testing.assert_close(rels.scores, rel_prob[order])
    assert torch.equal(rels.labels, rel_prob[order][:, 1:].argmax(1) + 1)
    assert rels.scores.shape[1] == NUM_PREDICATES + 1


def test_predict_handles_images_without_boxes():
    head = MODELS.build(dict(relation_head_cfg(), mode='predcls')).eval()
    head.init_weights()
    props = fake_proposals((3,), img_shape=(120, 128))
    empty = InstanceData(metainfo=dict(img_shape=(120, 128)))
    empty.bboxes = torch.zeros((0, 4))
    empty.labels = torch.zeros(0, dtype=torch.long)
    metas = [dict(scale_factor=(1., 1.))] * 2
    with torch.no_grad():
        (i0, r0), (i1, r1) = head.predict(_feats(), [props[0], empty], metas)
    assert len(i0) == 3 and len(r0) == 6
    assert len(i1) == 0 and r1.pairs.shape == (0, 2)
    assert r1.scores.shape == (0, NUM_PREDICATES + 1)
