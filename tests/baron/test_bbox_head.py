"""BaronBBoxHead: CLIP pseudo-word classification on top of mmdet's BBoxHead machinery.

Logits and losses are recomputed by hand in numpy from the .npy file and the region embeddings;
CLIP is the tiny random model (tests/clip checks its text path against open_clip).
"""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import ConfigDict

from ovkit.baron.bbox_head import (
    BaronBBoxHead,
    BaronConvFCBBoxHead,
    BaronShared2FCBBoxHead,
    BaronShared4Conv1FCBBoxHead,
)
from ovkit.clip import build_clip

NUM_CLASSES, DIM, IN_CH = 5, 64, 8


@pytest.fixture(scope='module')
def clip():
    return build_clip(dict(model_name='tiny', seed=0))


@pytest.fixture(scope='module')
def emb_file(tmp_path_factory):
    """Unnormalised random class embeddings: the head must normalise them itself."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp('emb') / 'classes5.npy'
    np.save(path, (rng.normal(size=(NUM_CLASSES, DIM)) * 3).astype(np.float32))
    return str(path)


def make_head(clip, emb_file, type='BaronBBoxHead', **kwargs):
    cfg = dict(type=type, num_classes=NUM_CLASSES, in_channels=IN_CH, roi_feat_size=7,
               num_words=3, word_dim=64, cls_embeddings_path=emb_file, words_drop_ratio=0.0,
               reg_class_agnostic=True)
    if type == 'BaronBBoxHead':
        cfg['with_avg_pool'] = True
    elif type == 'BaronShared4Conv1FCBBoxHead':
        cfg.update(conv_out_channels=8, fc_out_channels=32)
    elif type == 'BaronShared2FCBBoxHead':
        cfg.update(fc_out_channels=32)
    cfg.update(kwargs)
    head = MODELS.build(cfg)
    if clip is not None:
        head.set_clip(clip)
    return head


def rois_input(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, IN_CH, 7, 7, generator=g)


def np_logits(region, classes, bg, temp):
    """temperature x cosine, by hand: region [N, D], class rows (.npy path or array), bg last."""
    cls = np.array(np.load(classes) if isinstance(classes, str) else classes, dtype=np.float64)
    cls /= np.linalg.norm(cls, axis=1, keepdims=True)
    bg = np.asarray(bg, dtype=np.float64)[None]
    norm = np.linalg.norm(bg)
    bg = bg / norm if norm > 0 else bg
    region = region.detach().numpy().astype(np.float64)
    region /= np.linalg.norm(region, axis=1, keepdims=True)
    return temp * region @ np.concatenate([cls, bg]).T


# --------------------------------------------------------------------------- registry / shapes
def test_registered_under_mmdet_without_clash():
    import mmdet.models  # noqa: F401  (all of mmdet's own heads registered)
    for cls in (BaronBBoxHead, BaronConvFCBBoxHead, BaronShared2FCBBoxHead,
                BaronShared4Conv1FCBBoxHead):
        assert MODELS.get(cls.__name__) is cls
        assert cls.__module__ == 'ovkit.baron.bbox_head'
    assert MODELS.get('BBoxHead').__module__.startswith('mmdet.')
    assert MODELS.get('Shared4Conv1FCBBoxHead').__module__.startswith('mmdet.')


@pytest.mark.parametrize('type', ['BaronBBoxHead', 'BaronShared2FCBBoxHead',
                                  'BaronShared4Conv1FCBBoxHead'])
@pytest.mark.parametrize('agnostic', [True, False])
def test_forward_shapes(clip, emb_file, type, agnostic):
    head = make_head(clip, emb_file, type=type, reg_class_agnostic=agnostic).eval()
    x = rois_input(7)
    cls_score, bbox_pred = head(x)
    assert cls_score.shape == (7, NUM_CLASSES + 1)
    assert bbox_pred.shape == (7, 4 if agnostic else 4 * NUM_CLASSES)
    words = head.rois_to_words(x)
    assert words.shape == (7, 3, 64)
    assert head.encode_words(words).shape == (7, DIM)
    if type == 'BaronShared4Conv1FCBBoxHead':
        assert len(head.shared_convs) == 4 and len(head.shared_fcs) == 1
        assert head.fc_cls.in_features == 32
    assert head.fc_cls.out_features == 3 * 64
    # region_words is the projection alone: cls-branch features -> words.
    feats = torch.randn(2, head.fc_cls.in_features)
    torch.testing.assert_close(head.region_words(feats),
                               (feats @ head.fc_cls.weight.t() + head.fc_cls.bias).view(2, 3, 64))


def test_empty_rois(clip, emb_file):
    for type in ('BaronBBoxHead', 'BaronShared4Conv1FCBBoxHead'):
        for agnostic in (True, False):
            head = make_head(clip, emb_file, type=type, reg_class_agnostic=agnostic,
                             words_drop_ratio=0.5)
            for train in (True, False):
                head.train(train)
                cls_score, bbox_pred = head(torch.zeros(0, IN_CH, 7, 7))
                assert cls_score.shape == (0, NUM_CLASSES + 1)
                assert bbox_pred.shape == (0, 4 if agnostic else 4 * NUM_CLASSES)
            results = head.predict_by_feat(
                rois=(torch.zeros(0, 5), ), cls_scores=(cls_score, ), bbox_preds=(bbox_pred, ),
                batch_img_metas=[dict(img_shape=(64, 64), scale_factor=(1., 1.))],
                rcnn_test_cfg=ConfigDict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                                         max_per_img=10))
            assert results[0].bboxes.shape == (0, 4) and results[0].labels.shape == (0, )


# --------------------------------------------------------------------------- logits
@pytest.mark.parametrize('bg', ['zero', 'learn'])
@pytest.mark.parametrize('text_layer', [None, 2])
def test_logits_are_temperature_times_cosine(clip, emb_file, bg, text_layer):
    head = make_head(clip, emb_file, bg_embedding=bg, text_layer=text_layer, cls_temp=50.0,
                     test_cls_temp=30.0)
    x = rois_input(6)
    words = head.rois_to_words(x)
    region = clip.encode_pseudo_text(words, layer=text_layer)  # layer routed as configured
    if bg == 'learn':
        bg_vec = (head.bg_embedding.weight[:, 0] + head.bg_embedding.bias).detach().numpy()
    else:
        bg_vec = np.zeros(DIM)
    for train, temp in ((True, 50.0), (False, 30.0)):
        head.train(train)
        cls_score, _ = head(x)
        np.testing.assert_allclose(cls_score.detach().numpy(),
                                   np_logits(region, emb_file, bg_vec, temp), atol=1e-4)
    if bg == 'zero':
        assert (cls_score[:, -1] == 0).all()
    # The other text path gives other logits (the layer option is honoured).
    other = clip.encode_pseudo_text(words, layer=2 if text_layer is None else None)
    assert np.abs(np_logits(other, emb_file, bg_vec, 30.0)
                  - cls_score.detach().numpy()).max() > 1e-2


def test_attn12_alias_and_test_temp_default(clip, emb_file):
    head = make_head(None, emb_file, use_attn12_output=True)
    assert head.text_layer == 12 and head.test_cls_temp == head.cls_temp == 50.0
    with pytest.raises(ValueError, match='text_layer=12'):
        make_head(None, emb_file, use_attn12_output=True, text_layer=2)
    with pytest.raises(ValueError, match=r'text_layer=12.*2 text blocks'):
        head.set_clip(clip)  # the tiny CLIP has 2 blocks
    head = make_head(clip, emb_file)
    x = rois_input(4)
    train_logits = head.train()(x)[0]
    torch.testing.assert_close(head.eval()(x)[0], train_logits)


def test_cls_bias_only_with_sigmoid(clip, emb_file):
    with pytest.raises(ValueError, match=r'cls_bias=-2.*use_sigmoid=True'):
        make_head(clip, emb_file, cls_bias=-2.0)
    head = make_head(clip, emb_file, cls_bias=-2.0, test_cls_temp=50.0,
                     loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0))
    assert isinstance(head.cls_bias, torch.nn.Parameter) and head.cls_bias.item() == -2.0
    x = rois_input(5)
    train_logits = head.train()(x)[0]
    eval_logits = head.eval()(x)[0]
    torch.testing.assert_close(train_logits - eval_logits, torch.full_like(train_logits, -2.0))
    head.train()
    cls_score, bbox_pred = head(x)
    labels = torch.tensor([0, 1, 2, 5, 5])
    losses = head.loss(cls_score, bbox_pred, None, labels, torch.ones(5), torch.zeros(5, 4),
                       torch.zeros(5, 4))
    losses['loss_cls'].backward()
    assert head.cls_bias.grad is not None and head.cls_bias.grad.abs().item() > 0
    # Sigmoid heads score with sigmoid, not softmax (mmdet's BBoxHead would softmax).
    head.eval()
    cls_score, bbox_pred = head(x)
    rois = torch.cat([torch.zeros(5, 1), torch.tensor([[0., 0., 10., 10.]]).repeat(5, 1)], 1)
    res = head.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                               [dict(img_shape=(64, 64), scale_factor=(1., 1.))],
                               rcnn_test_cfg=None)[0]
    torch.testing.assert_close(res.scores, cls_score.sigmoid())
    soft = make_head(clip, emb_file).eval()
    cls_score, bbox_pred = soft(x)
    res = soft.predict_by_feat((rois, ), (cls_score, ), (bbox_pred, ),
                               [dict(img_shape=(64, 64), scale_factor=(1., 1.))],
                               rcnn_test_cfg=None)[0]
    torch.testing.assert_close(res.scores, cls_score.softmax(-1))


def test_predict_with_nms_returns_detections(clip, emb_file):
    for sigmoid in (False, True):
        head = make_head(clip, emb_file, loss_cls=dict(type='CrossEntropyLoss',
                                                       use_sigmoid=sigmoid)).eval()
        x = rois_input(3)
        with torch.no_grad():
            cls_score, bbox_pred = head(x)
        rois = torch.tensor([[0, 0, 0, 20, 20], [0, 30, 30, 60, 60], [0, 5, 30, 25, 60.]])
        res = head.predict_by_feat(
            (rois, ), (cls_score, ), (bbox_pred, ),
            [dict(img_shape=(64, 64), scale_factor=(2., 2.))],
            rcnn_test_cfg=ConfigDict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5),
                                     max_per_img=100), rescale=True)[0]
        probs = cls_score.sigmoid() if sigmoid else cls_score.softmax(-1)
        # Disjoint boxes: NMS keeps every (box, class) pair, scores are the probabilities.
        assert len(res) == 3 * NUM_CLASSES
        np.testing.assert_allclose(np.sort(res.scores.numpy()),
                                   np.sort(probs[:, :-1].flatten().numpy()), atol=1e-6)
        assert res.bboxes.max() <= 32.0 + 1e-4  # rescaled by 1 / scale_factor


# --------------------------------------------------------------------------- config errors
def test_embedding_file_errors(clip, emb_file, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cls_embeddings_path='.*missing.npy' not found"
                       r'.*gen_class_embeddings.py'):
        make_head(clip, str(tmp_path / 'missing.npy'))
    with pytest.raises(ValueError, match=r"classes5.npy' has 5 rows but num_classes=4"):
        make_head(clip, emb_file, num_classes=4)
    flat = tmp_path / 'flat.npy'
    np.save(flat, np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match=r'\[num_classes, D\]'):
        make_head(clip, str(flat))
    with pytest.raises(ValueError, match="bg_embedding='none'"):
        make_head(clip, emb_file, bg_embedding='none')
    narrow = tmp_path / 'narrow.npy'
    np.save(narrow, np.ones((5, 32), dtype=np.float32))
    head = make_head(None, str(narrow))
    with pytest.raises(ValueError, match=r"narrow.npy' has D=32 but CLIP tiny gives 64-d"):
        head.set_clip(clip)
    with pytest.raises(ValueError, match=r'word_dim=32 must equal the CLIP text width 64'):
        make_head(clip, emb_file, word_dim=32)
    with pytest.raises(RuntimeError, match=r'set_clip\(clip\)'):
        make_head(None, emb_file)(rois_input(2))
    with pytest.raises(ValueError, match='words_drop_ratio'):
        make_head(None, emb_file, words_drop_ratio=1.0)


def test_class_weight_errors(emb_file):
    with pytest.raises(ValueError, match=r'class_weight has 3 entries; expected num_classes=5'):
        make_head(None, emb_file, class_weight=[1, 1, 1])
    with pytest.raises(ValueError, match=r'novel_class_ids has 7'):
        make_head(None, emb_file, novel_class_ids=[7])


# --------------------------------------------------------------------------- training behaviour
def test_gradients_reach_head_not_clip(clip, emb_file):
    for type in ('BaronBBoxHead', 'BaronShared4Conv1FCBBoxHead'):
        head = make_head(clip, emb_file, type=type, bg_embedding='learn',
                         words_drop_ratio=0.5).train()
        n_params = len(list(head.parameters()))
        assert not any(k.startswith('_clip') or '.model.' in k for k in head.state_dict())
        assert 'cls_embeddings' not in head.state_dict()  # vocabulary comes from the config
        assert 'bg_embedding.weight' in head.state_dict()
        x = rois_input(6).requires_grad_()
        cls_score, bbox_pred = head(x)
        labels = torch.tensor([0, 1, 2, 3, 5, 5])
        losses = head.loss(cls_score, bbox_pred, None, labels, torch.ones(6),
                           torch.randn(6, 4), torch.ones(6, 4))
        (losses['loss_cls'] + losses['loss_bbox']).backward()
        assert len(list(head.parameters())) == n_params
        for name, p in head.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert x.grad.abs().sum() > 0
        assert all(p.grad is None for p in clip.parameters())


def test_word_dropout(clip, emb_file):
    head = make_head(clip, emb_file, words_drop_ratio=0.5).train()
    words = torch.zeros(4000, 3, 64)
    torch.manual_seed(0)
    keep = head.words_valid_mask(words)
    assert keep.shape == (4000, 3) and keep.dtype == torch.bool
    assert keep.any(dim=1).all()  # at least one word per region
    # P(kept) = 0.5 plus the rescued rows (all three dropped, p = 1/8, one word restored).
    assert abs(keep.float().mean().item() - (0.5 + 1 / 24)) < 0.02
    x = rois_input(8)
    torch.manual_seed(1)
    cls_score, _ = head(x)
    words = head.rois_to_words(x)
    torch.manual_seed(1)
    mask = head.words_valid_mask(words)
    assert not mask.all()
    expected = head.cls_logits(clip.encode_pseudo_text(words, mask))
    torch.testing.assert_close(cls_score, expected)
    full = head.cls_logits(clip.encode_pseudo_text(words))
    assert (cls_score - full).abs().max() > 1e-3  # dropout really changed the text
    head.eval()
    assert head.words_valid_mask(words) is None
    torch.testing.assert_close(head(x)[0], full)


def _np_masked_ce(logits, labels, weight):
    """mmdet CE (sum of weighted losses / #samples with weight > 0) with weight-0 classes removed
    from the softmax and their samples ignored."""
    logits = logits.astype(np.float64)
    keep_cols = weight > 0
    loss, count = 0.0, 0
    for row, label in zip(logits, labels):
        if weight[label] == 0:
            continue
        lse = np.log(np.exp(row[keep_cols]).sum())
        loss += weight[label] * (lse - row[label])
        count += 1
    return loss / max(count, 1)


def test_novel_classes_get_zero_weight(clip, emb_file):
    head = make_head(clip, emb_file, novel_class_ids=[1, 3]).train()
    assert head.class_weight.tolist() == [1, 0, 1, 0, 1, 1]
    x = rois_input(6)
    cls_score, bbox_pred = head(x)
    cls_score = cls_score.detach().requires_grad_()
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    losses = head.loss(cls_score, bbox_pred, None, labels, torch.ones(6), torch.zeros(6, 4),
                       torch.zeros(6, 4))
    weight = np.array([1, 0, 1, 0, 1, 1.])
    np.testing.assert_allclose(losses['loss_cls'].item(),
                               _np_masked_ce(cls_score.detach().numpy(), labels.numpy(), weight),
                               rtol=1e-5)
    losses['loss_cls'].backward()
    assert (cls_score.grad[:, [1, 3]] == 0).all()  # novel classes get no gradient
    assert (cls_score.grad[[1, 3]] == 0).all()  # nor do regions labelled novel
    assert cls_score.grad[:, [0, 2, 4, 5]].abs().sum() > 0
    plain = make_head(clip, emb_file).train()
    plain_loss = plain.loss(cls_score.detach(), bbox_pred, None, labels, torch.ones(6),
                            torch.zeros(6, 4), torch.zeros(6, 4))['loss_cls']
    assert abs(plain_loss.item() - losses['loss_cls'].item()) > 1e-3
    # Test time scores every class, novel ones included.
    head.eval()
    scores = head(x)[0].softmax(-1)
    assert (scores[:, [1, 3]] > 0).all()
    # A fractional class_weight (with background entry) scales the samples of that class.
    head = make_head(clip, emb_file, class_weight=[1, 0.5, 1, 0, 1, 1]).train()
    losses = head.loss(cls_score.detach(), bbox_pred, None, labels, torch.ones(6),
                       torch.zeros(6, 4), torch.zeros(6, 4))
    np.testing.assert_allclose(
        losses['loss_cls'].item(),
        _np_masked_ce(cls_score.detach().numpy(), labels.numpy(), np.array([1, .5, 1, 0, 1, 1])),
        rtol=1e-5)


def test_bf16_autocast_keeps_fp32_logits(clip, emb_file):
    head = make_head(clip, emb_file).eval()
    x = rois_input(6)
    ref = head(x)[0]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        low = head(x)[0]
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05 * 50  # bf16 text encoder, fp32 cosine x 50
    assert F.cosine_similarity(low, ref, dim=-1).min() > 0.99


def test_new_vocabulary_at_test_time(clip, emb_file):
    head = make_head(clip, emb_file).eval()
    x = rois_input(4)
    new = torch.randn(3, DIM)
    head.set_class_embeddings(new)
    assert head.num_classes == 3
    cls_score, bbox_pred = head(x)
    assert cls_score.shape == (4, 4) and bbox_pred.shape == (4, 4)
    region = head.encode_words(head.rois_to_words(x))
    np.testing.assert_allclose(cls_score.detach().numpy(),
                               np_logits(region, new.numpy(), np.zeros(DIM), 50.0), atol=1e-4)
    specific = make_head(clip, emb_file, reg_class_agnostic=False)
    with pytest.raises(ValueError, match='reg_class_agnostic=True'):
        specific.set_class_embeddings(new)



# --------------------------------------------------------------------------- recipe options
def test_background_weight_scales_background_samples(clip, emb_file):
    """class_weight with num_classes + 1 entries: BARON's OV-COCO KD config gives the
    background 0.7 (the reference's CustomCrossEntropyLoss: per-sample weight, mean over all
    samples)."""
    head = make_head(clip, emb_file, class_weight=[1] * NUM_CLASSES + [0.7]).train()
    cls_score = torch.randn(6, NUM_CLASSES + 1)
    labels = torch.tensor([0, 5, 2, 5, 4, 5])
    losses = head.loss(cls_score, None, None, labels, torch.ones(6), None, None)
    nll = F.cross_entropy(cls_score, labels, reduction='none')
    expected = (nll * torch.where(labels == NUM_CLASSES, 0.7, 1.0)).sum() / 6
    assert losses['loss_cls'].item() == pytest.approx(expected.item(), rel=1e-5)


def test_class_weight_from_category_info_removes_unseen_classes(clip, emb_file, tmp_path):
    import json
    info = [dict(id=i + 1, name=f'c{i}', image_count=c)
            for i, c in enumerate([5, 0, 3, 0, 1])]
    path = tmp_path / 'cat_info.json'
    path.write_text(json.dumps(info[::-1]))  # order by id, not by file position
    head = make_head(clip, emb_file, class_weight=str(path)).train()
    assert head.class_weight.tolist() == [1, 0, 1, 0, 1, 1]
    # an annotation file says the same: classes without annotations get 0
    ann = dict(images=[], categories=[dict(id=i + 1, name=f'c{i}') for i in range(5)],
               annotations=[dict(id=1, image_id=1, category_id=c) for c in (1, 3, 5, 5)])
    path2 = tmp_path / 'train.json'
    path2.write_text(json.dumps(ann))
    assert make_head(clip, emb_file, class_weight=str(path2)).class_weight.tolist() == \
        [1, 0, 1, 0, 1, 1]
    # weight-0 classes leave the training softmax: no probability, no gradient
    cls_score = torch.randn(4, NUM_CLASSES + 1, requires_grad=True)
    head.loss(cls_score, None, None, torch.tensor([0, 2, 5, 4]), torch.ones(4), None,
              None)['loss_cls'].backward()
    assert (cls_score.grad[:, [1, 3]] == 0).all() and cls_score.grad[:, 0].abs().sum() > 0
    with pytest.raises(FileNotFoundError, match="class_weight='nowhere.json'"):
        make_head(clip, emb_file, class_weight='nowhere.json')
    bad = tmp_path / 'bad.json'
    bad.write_text(json.dumps(info[:3]))
    with pytest.raises(ValueError, match='lists 3 categories but num_classes=5'):
        make_head(clip, emb_file, class_weight=str(bad))


def test_extra_test_classes_take_probability_mass_then_vanish(clip, emb_file):
    """Reference OV-COCO scoring: softmax over 80 classes + background, 65 reported. Here 5
    reported + 2 extra: the reported scores equal that softmax's columns, and detections of
    the extra classes are dropped after the NMS."""
    extra = torch.randn(2, DIM)
    head = make_head(clip, emb_file, extra_test_embeddings=extra).eval()
    x = rois_input(6)
    cls_score, bbox_pred = head(x)
    assert cls_score.shape == (6, NUM_CLASSES + 2 + 1)
    region = head.encode_words(head.rois_to_words(x))
    classes = np.concatenate([np.load(emb_file), extra.numpy()])
    np.testing.assert_allclose(cls_score.detach().numpy(),
                               np_logits(region, classes, np.zeros(DIM), 50.0), atol=1e-4)
    # training ignores them (as the reference's weight 0 does)
    head.train()
    assert head(x)[0].shape == (6, NUM_CLASSES + 1)
    head.eval()
    # make every roi most likely an extra class, except roi 0
    logits = torch.full((6, NUM_CLASSES + 3), -5.0)
    logits[:, NUM_CLASSES] = 5.0
    logits[0, 2] = 6.0
    rois = torch.cat([torch.zeros(6, 1), torch.tensor([[0., 0., 10., 10.]] * 6)
                      + torch.arange(6.)[:, None] * 20], 1)
    meta = dict(img_shape=(200, 200), scale_factor=(1., 1.))
    cfg = ConfigDict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100)
    res = head._predict_by_feat_single(rois, logits, torch.zeros(6, 4), meta, rcnn_test_cfg=cfg)
    assert res.labels.tolist() == [2]
    probs = logits.softmax(-1)
    assert res.scores.item() == pytest.approx(probs[0, 2].item(), rel=1e-5)
    raw = head._predict_by_feat_single(rois, logits, torch.zeros(6, 4), meta)
    assert raw.scores.shape == (6, NUM_CLASSES + 1)  # reported classes + background
    torch.testing.assert_close(raw.scores, probs[:, list(range(NUM_CLASSES)) + [-1]])
    # a new vocabulary drops them; class-specific regression cannot have them
    head.set_class_embeddings(torch.randn(3, DIM))
    assert head.extra_test_embeddings is None and head(x)[0].shape == (6, 4)
    with pytest.raises(ValueError, match='reg_class_agnostic=True'):
        make_head(clip, emb_file, extra_test_embeddings=extra, reg_class_agnostic=False)
    with pytest.raises(ValueError, match='D=3'):
        make_head(clip, emb_file, extra_test_embeddings=torch.randn(2, 3))


def test_norm_eval_freezes_box_head_batch_norm(clip, emb_file):
    head = make_head(clip, emb_file, type='BaronShared4Conv1FCBBoxHead', norm_eval=True,
                     norm_cfg=dict(type='BN', requires_grad=False))
    bns = [m for m in head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 4 and not any(p.requires_grad for m in bns for p in m.parameters())
    head.train()
    assert head.training and not any(m.training for m in bns)
    before = [m.running_mean.clone() for m in bns]
    head(rois_input(8) * 3 + 1)
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns))
    trainable = make_head(clip, emb_file, type='BaronShared4Conv1FCBBoxHead',
                          norm_cfg=dict(type='BN', requires_grad=True)).train()
    trainable(rois_input(8) * 3 + 1)
    tbns = [m for m in trainable.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.training for m in tbns) and tbns[0].running_mean.abs().sum() > 0


def test_mlp_box_regressor(clip, emb_file):
    reg = [dict(type='Linear', in_features=1024, out_features=1024),
           dict(type='ReLU', inplace=True),
           dict(type='Linear', in_features=1024, out_features=4)]
    head = make_head(clip, emb_file, type='BaronShared2FCBBoxHead', reg_predictor_cfg=reg)
    layers = list(head.fc_reg)
    assert [type(m).__name__ for m in layers] == ['Linear', 'ReLU', 'Linear']
    # the first in_features and the last out_features follow the head, as mmdet fills them
    assert (layers[0].in_features, layers[0].out_features, layers[2].out_features) == \
        (32, 1024, 4)
    head.init_weights()
    assert layers[2].weight.std() < 0.01  # mmdet's fc_reg init (std 0.001) reaches it
    x = rois_input(5)
    _, bbox_pred = head(x)
    with torch.no_grad():
        shared = x.flatten(1)
        for fc in head.shared_fcs:
            shared = head.relu(fc(shared))
        expected = layers[2](torch.relu(layers[0](shared)))
    torch.testing.assert_close(bbox_pred, expected)
    specific = make_head(clip, emb_file, type='BaronShared2FCBBoxHead', reg_predictor_cfg=reg,
                         reg_class_agnostic=False)
    assert specific.fc_reg[2].out_features == 4 * NUM_CLASSES
    with pytest.raises(ValueError, match="type='Linear'"):
        make_head(clip, emb_file, type='BaronShared2FCBBoxHead',
                  reg_predictor_cfg=[dict(type='ReLU')])


def test_no_false_space_warning_for_embeddings_in_memory(clip, emb_file):
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        emb = torch.randn(NUM_CLASSES, DIM)
        head = make_head(clip, emb, text_layer=1)
        assert not [r for r in records if 'looks like' in r.getMessage()]
        assert head.cls_embeddings_path == '<embeddings given in memory>'
        make_head(clip, emb_file, text_layer=1)  # a file name without 'attn': warned
        warned = [r.getMessage() for r in records if 'looks like' in r.getMessage()]
        assert len(warned) == 1 and 'classes5.npy' in warned[0] and 'tensor' not in warned[0]
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------- ensemble head
def _ens_head(clip, emb_file, **kwargs):
    kd = dict(type='BaronShared2FCBBoxHead', in_channels=IN_CH, roi_feat_size=7,
              fc_out_channels=32)
    return make_head(clip, emb_file, type='EnsembleBaronShared2FCBBoxHead', kd_head=kd,
                     fc_out_channels=32, **kwargs)


def test_ensemble_head_trains_like_the_plain_head_and_distils_through_its_kd_branch(
        clip, emb_file):
    torch.manual_seed(0)
    head = _ens_head(clip, emb_file, novel_class_ids=[1, 3])
    head.init_weights()
    plain = make_head(clip, emb_file, type='BaronShared2FCBBoxHead', novel_class_ids=[1, 3])
    state = {k: v for k, v in head.state_dict().items() if not k.startswith('kd_head.')}
    plain.load_state_dict(state, strict=True)  # same layers, plus the KD branch
    x = rois_input(4)
    torch.testing.assert_close(head(x)[0], plain(x)[0])  # the classification path is unchanged
    # the KD path (what BaronKD's bags read) is the KD branch, and only it gets the gradient
    words = head.rois_to_words(x)
    torch.testing.assert_close(words, head.kd_head.rois_to_words(x))
    assert not torch.allclose(words, plain.rois_to_words(x))
    words.sum().backward()
    assert head.kd_head.fc_cls.weight.grad.abs().sum() > 0
    assert head.fc_cls.weight.grad is None and not head.kd_head.with_reg


def test_ensemble_scores_by_hand(clip, emb_file):
    """base / background: p^f q^(1-f), novel: p^(1-f) q^f, p and q the two branches' softmax over
    the same class and background embeddings; prediction uses them without a softmax."""
    torch.manual_seed(1)
    head = _ens_head(clip, emb_file, novel_class_ids=[1, 3], bg_embedding='learn',
                     test_cls_temp=30.0).eval()
    head.init_weights()
    x = rois_input(5)
    with torch.no_grad():
        scores, bbox_pred = head(x)
        classes = np.load(emb_file)
        bg = head.class_embeddings_with_bg()[-1].numpy()
        main = head.encode_words(head._forward_branches(x)[0].view(5, 3, DIM))
        kd = head.encode_words(head.kd_head.rois_to_words(x))
    p = torch.from_numpy(np_logits(main, classes, bg, 30.0)).softmax(-1).numpy()
    q = torch.from_numpy(np_logits(kd, classes, bg, 30.0)).softmax(-1).numpy()
    f = 2.0 / 3.0
    novel = np.array([False, True, False, True, False, False])
    expect = np.where(novel, p ** (1 - f) * q ** f, p ** f * q ** (1 - f))
    np.testing.assert_allclose(scores.numpy(), expect, rtol=1e-4, atol=1e-6)
    assert not np.allclose(expect.sum(1), 1.0)  # not a distribution: no softmax may follow
    rois = torch.cat([torch.zeros(5, 1), torch.rand(5, 2) * 20, 30 + torch.rand(5, 2) * 20], 1)
    raw = head._predict_by_feat_single(rois, scores, bbox_pred,
                                       dict(img_shape=(64, 64), scale_factor=(1., 1.)))
    torch.testing.assert_close(raw.scores, scores)
    # no split known (a run-time vocabulary): every class is base; extra test classes are novel
    assert head.novel_mask(NUM_CLASSES + 1).tolist() == novel.tolist()
    head.set_class_embeddings(torch.randn(NUM_CLASSES, DIM))  # same size, still a new split
    assert head.class_weight is None and not head.novel_mask(NUM_CLASSES + 1).any()
    head.set_class_embeddings(torch.randn(4, DIM))
    assert not head.novel_mask(5).any()
    head.extra_test_embeddings = torch.randn(2, DIM)
    assert head.novel_mask(7).tolist() == [False] * 4 + [True, True, False]
    assert head(x)[0].shape == (5, 7)


def test_region_cosines_are_the_heads_own_cosines(clip, emb_file):
    """region_cosines (what tools/analysis/baron_region_confusion.py reports): cosine of the
    head's own region embedding with each class and the background, by hand; for an ensemble
    head the main branch's, not its combined probabilities."""
    torch.manual_seed(2)
    x = rois_input(4)
    plain = make_head(clip, emb_file, bg_embedding='learn', test_cls_temp=30.0).eval()
    ens = _ens_head(clip, emb_file, novel_class_ids=[1], bg_embedding='learn').eval()
    ens.init_weights()
    classes = np.load(emb_file)
    for head in (plain, ens):
        with torch.no_grad():
            cos = head.region_cosines(x)
            region = head.encode_words(head._forward_branches(x)[0].view(4, 3, DIM))
        bg = head.class_embeddings_with_bg()[-1].detach().numpy()
        np.testing.assert_allclose(cos.numpy(), np_logits(region, classes, bg, 1.0),
                                   rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(plain.region_cosines(x), plain(x)[0] / 30.0)
        kd = ens.encode_words(ens.kd_head.rois_to_words(x))  # the other branch: not these
    assert not np.allclose(ens.region_cosines(x).detach().numpy(), np_logits(
        kd, classes, ens.class_embeddings_with_bg()[-1].detach().numpy(), 1.0), atol=1e-3)
    # training: the same cosines without the temperature (and a sigmoid head's bias)
    sig = make_head(clip, emb_file, cls_bias=-2.0,
                    loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True)).train()
    with torch.no_grad():
        torch.testing.assert_close(sig.region_cosines(x), (sig(x)[0] + 2.0) / sig.cls_temp)


def test_ensemble_head_errors(clip, emb_file):
    with pytest.raises(ValueError, match='ensemble_factor=0.5'):
        _ens_head(clip, emb_file, ensemble_factor=0.5)
    kd = dict(type='BaronShared2FCBBoxHead', in_channels=IN_CH, roi_feat_size=7,
              fc_out_channels=32, num_words=2)
    with pytest.raises(ValueError, match='num_words=2'):
        make_head(clip, emb_file, type='EnsembleBaronShared2FCBBoxHead', kd_head=kd,
                  fc_out_channels=32)
    kd = dict(type='BaronShared2FCBBoxHead', in_channels=IN_CH, roi_feat_size=7,
              fc_out_channels=32, text_layer=1)
    with pytest.raises(ValueError, match='kd_head has text_layer=1 .* but this head None'):
        make_head(clip, emb_file, type='EnsembleBaronShared2FCBBoxHead', kd_head=kd,
                  fc_out_channels=32)
    kd = dict(type='Shared2FCBBoxHead', in_channels=IN_CH, roi_feat_size=7, num_classes=5)
    with pytest.raises(TypeError, match='BARON box head'):
        make_head(clip, emb_file, type='EnsembleBaronShared2FCBBoxHead', kd_head=kd)
