"""SceneGraphDetector: freezing, detector loading, the three modes, the prediction contract."""
import pytest
import torch
from mmengine.config import ConfigDict

from ovkit.sgg.detector import DETECTOR_PARTS
from tests.sgg.model_helpers import (
    IMAGES,
    NUM_CLASSES,
    NUM_PREDICATES,
    build_in_mmdet_scope,
    build_model,
    fake_batch,
    tiny_detector_cfg,
)

MODES = ('predcls', 'sgcls', 'sgdet')


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('predictor', ['MotifsPredictor', 'IMPPredictor'])
def test_gradients_reach_the_relation_head_and_never_the_detector(mode, predictor):
    model = build_model(mode, predictor)
    model.train()
    for name in DETECTOR_PARTS:
        assert not getattr(model, name).training  # frozen BN / eval behaviour
    assert model.relation_head.training
    inputs, samples = fake_batch(model)
    losses = model.loss(inputs, samples)
    expect = {'loss_rel'} if mode == 'predcls' else {'loss_rel', 'loss_refine_obj'}
    assert set(losses) == expect
    sum(losses.values()).backward()
    for name in DETECTOR_PARTS:
        for pname, p in getattr(model, name).named_parameters():
            assert not p.requires_grad and p.grad is None, f'{name}.{pname} would train'
    missing = [n for n, p in model.relation_head.named_parameters() if p.grad is None]
    assert not missing, f'no gradient reaches {missing}'


def test_training_lowers_the_loss_on_a_fixed_batch():
    model = build_model('predcls', 'MotifsPredictor')
    model.train()
    inputs, samples = fake_batch(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.02, momentum=0.9)
    history = []
    torch.manual_seed(0)
    for _ in range(25):
        loss = sum(model.loss(inputs, samples).values())
        history.append(loss.item())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)  # SGB's GRAD_NORM_CLIP
        opt.step()
    assert sum(history[-5:]) / 5 < 0.5 * history[0]


@pytest.mark.parametrize('mode', MODES)
def test_predictions_follow_the_interface(mode):
    model = build_model(mode, 'MotifsPredictor').eval()
    inputs, samples = fake_batch(model, training=False)
    with torch.no_grad():
        out = model.predict(inputs, samples)
    for s, im in zip(out, IMAGES):
        inst, rels = s.pred_instances, s.pred_relations
        n = len(inst)
        h, w = im['shape']
        assert inst.bboxes.shape == (n, 4) and inst.scores.shape == (n,)
        assert inst.labels.min() >= 0 and inst.labels.max() < NUM_CLASSES
        # boxes are back in the original image
        assert inst.bboxes[:, 0::2].max() <= w + 1e-3 and inst.bboxes[:, 1::2].max() <= h + 1e-3
        m = len(rels)
        assert rels.pairs.shape == (m, 2) and rels.scores.shape == (m, NUM_PREDICATES + 1)
        assert (rels.pairs < n).all()
        torch.testing.assert_close(rels.scores.sum(1), torch.ones(m))
        assert torch.equal(rels.labels, rels.scores[:, 1:].argmax(1) + 1)
        triple = (rels.scores[:, 1:].max(1).values * inst.scores[rels.pairs[:, 0]] *
                  inst.scores[rels.pairs[:, 1]])
        assert torch.all(triple[:-1] >= triple[1:])
        if mode == 'sgdet':
            assert n <= model.test_cfg.rcnn.max_per_img
        else:
            torch.testing.assert_close(inst.bboxes, torch.tensor(im['boxes'], dtype=torch.float),
                                       atol=1e-4, rtol=0)
            assert m == n * (n - 1)
        if mode == 'predcls':
            assert torch.equal(inst.labels, torch.tensor(im['labels']))
            assert torch.all(inst.scores == 1.0)


@pytest.mark.parametrize('mode', MODES)
def test_an_image_gets_the_same_graph_alone_and_in_a_batch(mode):
    """Batched evaluation (which SGB's Motifs forbids) must not mix images."""
    model = build_model(mode, 'MotifsPredictor').eval()
    same_shape = [dict(IMAGES[1]), dict(IMAGES[1], boxes=IMAGES[1]['boxes'][::-1])]
    inputs, samples = fake_batch(model, training=False, images=same_shape)
    with torch.no_grad():
        both = model.predict(inputs, samples)
        alone = model.predict(inputs[1:], [samples[1].clone()])
    a, b = both[1], alone[0]
    torch.testing.assert_close(a.pred_instances.bboxes, b.pred_instances.bboxes)
    assert torch.equal(a.pred_instances.labels, b.pred_instances.labels)
    assert torch.equal(a.pred_relations.pairs, b.pred_relations.pairs)
    torch.testing.assert_close(a.pred_relations.scores, b.pred_relations.scores)


def test_detector_checkpoint_loads_and_initialises_relation_mlps(tmp_path):
    torch.manual_seed(1)
    det = build_in_mmdet_scope(ConfigDict(tiny_detector_cfg(), type='FasterRCNN'))
    path = tmp_path / 'det.pth'
    torch.save(dict(state_dict=det.state_dict(), meta=dict()), path)
    model = build_model('sgcls', 'MotifsPredictor', init=False)
    model.detector_checkpoint = str(path)
    model.init_weights()
    for name in DETECTOR_PARTS:
        mine, ref = getattr(model, name).state_dict(), getattr(det, name).state_dict()
        for k, v in ref.items():
            torch.testing.assert_close(mine[k], v, msg=f'{name}.{k}')
    shared = det.roi_head.bbox_head.shared_fcs
    for ext in (model.relation_head.box_feature_extractor,
                model.relation_head.union_feature_extractor):
        torch.testing.assert_close(ext.fcs[0].weight, shared[0].weight)
        torch.testing.assert_close(ext.fcs[2].bias, shared[1].bias)
    # the copies train; the detector's own box head does not
    assert ext.fcs[0].weight.requires_grad
    assert not model.roi_head.bbox_head.shared_fcs[0].weight.requires_grad


def test_missing_detector_checkpoint_names_the_key(tmp_path):
    model = build_model('predcls', 'MotifsPredictor', init=False)
    model.detector_checkpoint = str(tmp_path / 'nope.pth')
    with pytest.raises(FileNotFoundError, match='model.detector_checkpoint'):
        model.init_weights()


def test_bad_mode_is_a_clear_error():
    with pytest.raises(ValueError, match='model.mode'):
        build_model('sgdett', 'MotifsPredictor', init=False)


def test_frequency_baseline_in_predcls_never_runs_the_detector():
    model = build_model('predcls', 'FrequencyPredictor')
    assert not model.needs_image_features

    def boom(*args, **kwargs):
        raise AssertionError('the frozen detector ran')
    model.extract_feat = boom
    inputs, samples = fake_batch(model)
    losses = model.train().loss(inputs, samples)
    losses['loss_rel'].backward()
    assert model.relation_head.predictor.freq_bias.obj_baseline.weight.grad is not None
    inputs, samples = fake_batch(model, training=False)
    with torch.no_grad():
        out = model.eval().predict(inputs, samples)
    assert len(out[0].pred_relations) == 12
    assert build_model('sgcls', 'FrequencyPredictor', init=False).needs_image_features


def _sgb_filter_results(boxes, scores, score_thr, nms_thr, max_per_img):
    """SGB box_head/inference.py ``filter_results`` (NMS_FILTER_DUPLICATES) with torchvision's
    NMS; ``scores`` in SGB order (background first)."""
    from torchvision.ops import nms
    num_classes = scores.shape[1]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    for j in range(1, num_classes):
        inds = (scores[:, j] > score_thr).nonzero()[:, 0]
        keep = nms(boxes[inds, j], scores[inds, j], nms_thr)
        mask[inds[keep], j] = True
    best, labels = (scores * mask).max(1)
    idx = best.nonzero()[:, 0]
    order = best[idx].argsort(descending=True)[:max_per_img]
    return idx[order], labels[idx[order]], best[idx[order]]


def test_sgdet_boxes_follow_sgb_relation_mode_postprocessing():
    model = build_model('sgdet', 'MotifsPredictor').eval()
    g = torch.Generator().manual_seed(3)
    n, c = 40, NUM_CLASSES
    xy = torch.rand(n, 2, generator=g) * 60
    props = torch.cat([xy, xy + 8 + torch.rand(n, 2, generator=g) * 30], 1)
    cls_score = torch.randn(n, c + 1, generator=g) * 2
    bbox_pred = torch.randn(n, 4 * c, generator=g) * 0.1
    meta = dict(img_shape=(120, 128))
    labels = torch.randint(0, c + 1, (n,), generator=g)
    out = model._detections(props, cls_score, bbox_pred, meta, labels)
    per_cls = model.roi_head.bbox_head.bbox_coder.decode(
        props.repeat_interleave(c, 0), bbox_pred.view(-1, 4), max_shape=(120, 128)).view(n, c, 4)
    sgb_boxes = torch.cat([props[:, None], per_cls], 1)
    sgb_scores = torch.cat([cls_score.softmax(1)[:, -1:], cls_score.softmax(1)[:, :-1]], 1)
    idx, lab, score = _sgb_filter_results(sgb_boxes, sgb_scores, 0.01, 0.3,
                                          model.test_cfg.rcnn.max_per_img)
    assert len(out) == len(idx) == model.test_cfg.rcnn.max_per_img
    torch.testing.assert_close(out.det_scores, score)
    torch.testing.assert_close(out.bboxes, sgb_boxes[idx, lab])
    torch.testing.assert_close(out.boxes_per_cls, sgb_boxes[idx])
    torch.testing.assert_close(out.predict_logits.softmax(1), sgb_scores[idx])
    assert torch.equal(out.labels, labels[idx])


def test_a_detector_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path):
    """Another class count: the box head's classifier has another shape (and a dropped key is
    missing); nothing is loaded half-way."""
    det = build_in_mmdet_scope(ConfigDict(tiny_detector_cfg(), type='FasterRCNN'))
    state = det.state_dict()
    state['roi_head.bbox_head.fc_cls.weight'] = state['roi_head.bbox_head.fc_cls.weight'][:3]
    state.pop('neck.fpn_convs.0.conv.bias')
    state['roi_head.extra.weight'] = torch.zeros(1)
    model = build_model('sgcls', 'MotifsPredictor', init=False)
    before = model.backbone.conv1.weight.clone()
    with pytest.raises(ValueError, match='does not fit') as err:
        model.load_detector_state(state, 'det.pth')
    text = str(err.value)
    assert 'neck.fpn_convs.0.conv.bias' in text and 'roi_head.extra.weight' in text
    assert 'roi_head.bbox_head.fc_cls.weight (3, ' in text
    assert torch.equal(model.backbone.conv1.weight, before)
