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

from ovkit.baron.bbox_head import (BaronBBoxHead, BaronConvFCBBoxHead, BaronShared2FCBBoxHead,
                                   BaronShared4Conv1FCBBoxHead)
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

