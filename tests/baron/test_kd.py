"""BaronKD: losses checked against numpy, teacher inputs, gradients, queues, empty batches."""
import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from ovkit.baron.kd import BaronKD, symmetric_info_nce
from ovkit.baron.queues import FeatureQueue

DET_MEAN = (123.675, 116.28, 103.53)
DET_STD = (58.395, 57.12, 57.375)


def det_normalise(raw):
    return (raw - torch.tensor(DET_MEAN).view(1, 3, 1, 1)) / torch.tensor(DET_STD).view(1, 3, 1, 1)
NUM_WORDS, WORD_DIM, EMBED = 3, 8, 6
IMG_H, IMG_W = 64, 80


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny tensors: on a shared 2-core machine thread hand-offs cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeClip(nn.Module):
    """Same interface as ovkit.clip; records what it is given and what it returns."""
    text_width = WORD_DIM
    embed_dim = EMBED
    image_size = 8
    image_mean = (0.48145466, 0.4578275, 0.40821073)  # open_clip style, [0, 1] units
    image_std = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, constant_dense=False):
        super().__init__()
        torch.manual_seed(0)
        self.text_proj = nn.Linear(WORD_DIM, EMBED)
        self.image_proj = nn.Linear(3 * 4 * 4, EMBED)
        self.dense_proj = nn.Conv2d(3, EMBED, 1)
        self.constant_dense = constant_dense
        self.calls = {'text_in': [], 'text_out': [], 'tokens_out': [], 'image_in': [],
                      'image_out': []}

    def encode_pseudo_text(self, words, valid_mask=None, layer=None, normalize=True,
                           return_word_tokens=False, word_token_mode='causal'):
        self.calls['text_in'].append((words.detach().clone(), valid_mask.clone()))
        self.calls.setdefault('word_token_mode', []).append(word_token_mode)
        m = valid_mask.float()[..., None]
        rank = valid_mask.long().cumsum(1).float()[..., None]  # word order matters
        x = (words * m * (1 + 0.1 * rank)).sum(1) / m.sum(1).clamp(min=1)
        out = self.text_proj(torch.tanh(x))
        out = F.normalize(out, dim=-1) if normalize else out
        self.calls['text_out'].append(out.detach().clone())
        if not return_word_tokens:
            return out
        tokens = self.text_proj(torch.tanh(words * (1 + 0.1 * rank))) * m
        self.calls['tokens_out'].append(tokens.detach().clone())
        return out, tokens

    def encode_image(self, images, normalize=True, dense_mode=None):
        self.calls['image_in'].append(images.detach().clone())
        self.calls.setdefault('dense_mode', []).append(dense_mode)
        out = self.image_proj(F.adaptive_avg_pool2d(images, 4).flatten(1))
        out = F.normalize(out, dim=-1) if normalize else out
        self.calls['image_out'].append(out.detach().clone())
        if dense_mode is None:
            return out
        if self.constant_dense:  # every patch = the crop's global feature
            return out, out[:, :, None, None].expand(-1, -1, 4, 4)
        return out, self.dense_proj(F.adaptive_avg_pool2d(images, 4))


class FakeRoIHead(nn.Module):
    """boxes_to_words: RoI-align the feature map, then a linear layer -> pseudo words."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(4 * 2 * 2, NUM_WORDS * WORD_DIM)
        self.calls = []

    def forward(self, feats, rois):
        self.calls.append(rois.detach().clone())
        x = roi_align(feats[0], rois, (2, 2), spatial_scale=0.25, sampling_ratio=2, aligned=True)
        return self.fc(x.flatten(1)).view(-1, NUM_WORDS, WORD_DIM)


def make_kd(**kwargs):
    torch.manual_seed(2)
    cfg = dict(num_words=NUM_WORDS, word_dim=WORD_DIM, embed_dim=EMBED, queue_length=64,
               pos_feats=8, sampler=dict(objectness_thr=0.5, alpha=1.0, base_probability=0.6))
    cfg.update(kwargs)
    return BaronKD(**cfg)


def make_batch(num_imgs=2, img_ids=(11, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    raw = torch.rand(num_imgs, 3, IMG_H, IMG_W, generator=g) * 255
    inputs = det_normalise(raw)
    feats = (torch.randn(num_imgs, 4, IMG_H // 4, IMG_W // 4, generator=g).requires_grad_(),)
    props = torch.tensor([[8., 8., 24., 26., 0.95], [40., 30., 58., 48., 0.9],
                          [20., 40., 36., 58., 0.92], [41., 31., 57., 47., 0.6]])
    rpn = [props.clone() for _ in range(num_imgs)]
    metas = [dict(img_shape=(IMG_H, IMG_W), img_id=img_ids[i]) for i in range(num_imgs)]
    return feats, rpn, inputs, metas


def run(kd, clip, head, batch, seed=0, **kwargs):
    feats, rpn, inputs, metas = batch
    return kd(feats, rpn, inputs, metas, DET_MEAN, DET_STD, clip, head,
              generator=torch.Generator().manual_seed(seed), **kwargs)


# ------------------------------------------------------------------ numpy reference
def np_info_nce(t, v, temp, groups, img_ids, qt=None, qt_ids=None, qv=None, qv_ids=None):
    t, v = np.asarray(t, np.float64), np.asarray(v, np.float64)
    qt = np.zeros((0, t.shape[1])) if qt is None else np.asarray(qt, np.float64)
    qv = np.zeros((0, t.shape[1])) if qv is None else np.asarray(qv, np.float64)
    qt_ids = [] if qt_ids is None else list(qt_ids)
    qv_ids = [] if qv_ids is None else list(qv_ids)
    n, total = len(t), 0.0
    for query, keys, queue, queue_ids in ((t, v, qv, qv_ids), (v, t, qt, qt_ids)):
        for i in range(n):
            logits = [temp * query[i] @ keys[j] for j in range(n)
                      if j == i or groups[j] != groups[i]]
            logits += [temp * query[i] @ queue[m] for m in range(len(queue))
                       if queue_ids[m] != img_ids[i]]
            top = max(logits)
            lse = top + math.log(sum(math.exp(x - top) for x in logits))
            total += 0.5 * (lse - temp * query[i] @ keys[i]) / n
    return total


def test_symmetric_info_nce_matches_numpy():
    g = torch.Generator().manual_seed(0)
    t = F.normalize(torch.randn(7, 5, generator=g), dim=-1).requires_grad_()
    v = F.normalize(torch.randn(7, 5, generator=g), dim=-1)
    groups = torch.tensor([0, 0, 1, 2, 2, 2, 3])
    img = torch.tensor([5, 5, 5, 6, 6, 6, 7])
    qt = F.normalize(torch.randn(6, 5, generator=g), dim=-1)
    qv = F.normalize(torch.randn(6, 5, generator=g), dim=-1)
    q_ids = torch.tensor([5, 9, 6, 6, 8, 7])
    loss = symmetric_info_nce(t, v, 30.0, groups, img, (qt, q_ids), (qv, q_ids))
    ref = np_info_nce(t.detach(), v, 30.0, groups.tolist(), img.tolist(), qt, q_ids.tolist(),
                      qv, q_ids.tolist())
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    # the masks matter: without them the value differs
    unmasked = np_info_nce(t.detach(), v, 30.0, list(range(7)), [-1] * 7, qt, q_ids.tolist(),
                           qv, q_ids.tolist())
    assert abs(unmasked - ref) > 1e-3
    loss.backward()
    assert t.grad is not None and t.grad.abs().sum() > 0
    # no queue, no rows
    assert symmetric_info_nce(t, v, 30.0, groups, img).item() == pytest.approx(
        np_info_nce(t.detach(), v, 30.0, groups.tolist(), img.tolist()), rel=1e-5)
    empty = torch.zeros(0, 5, requires_grad=True)
    assert symmetric_info_nce(empty, empty, 30.0, torch.zeros(0), torch.zeros(0)).item() == 0
    with pytest.raises(ValueError, match='must match'):
        symmetric_info_nce(t, v[:3], 30.0, groups, img)


# ------------------------------------------------------------------ end to end
def test_losses_match_hand_computation_including_queue_masking():
    fresh = make_kd(word_drop_ratio=0.5)
    kd, clip, head = copy.deepcopy(fresh), FakeClip(constant_dense=True), FakeRoIHead()
    kd.train()
    feats, rpn, inputs, metas = batch = make_batch()
    losses = run(kd, clip, head, batch, seed=3)
    samples = kd.sampler.sample(rpn, [(IMG_H, IMG_W)] * 2,
                                generator=torch.Generator().manual_seed(3))
    seq_bag, seq_img, bag_ids, regions, entry_img = [], [], [], [], []
    nb = nr = 0
    for s, img_id in zip(samples, (11, 12)):
        seq_bag += (s['seq_bag'] + nb).tolist()
        seq_img += [img_id] * len(s['seq_bag'])
        bag_ids += (s['bag_ids'] + nb).tolist()
        regions += (s['region_index'] + nr).tolist()
        entry_img += [img_id] * len(s['bag_ids'])
        nb, nr = nb + len(s['spanned']), nr + len(s['regions'])
    bag_text, bag_image = clip.calls['text_out'][0], clip.calls['image_out'][0]
    assert len(bag_text) == len(seq_bag) and len(bag_image) == nb
    ref_bag = np_info_nce(bag_text, bag_image[seq_bag], 30.0, seq_bag, seq_img)
    assert losses['loss_bag'].item() == pytest.approx(ref_bag, rel=1e-5)
    # single regions: one entry per (sentence, member), the mean output of its kept words;
    # with constant dense maps a region's patch feature is its bag's image feature
    tokens = clip.calls['tokens_out'][0].numpy()
    valid = clip.calls['text_in'][0][1].numpy()
    sequences = np.concatenate([np.where(s['sequences'].numpy() >= 0,
                                         s['sequences'].numpy() + off, -1)
                                for s, off in zip(samples, (0, len(samples[0]['bag_ids'])))])
    region_text, region_img, region_grp, region_ids = [], [], [], []
    for s_idx, row in enumerate(sequences):
        for k, e in enumerate(row):
            if e < 0:
                continue
            words = slice(k * NUM_WORDS, (k + 1) * NUM_WORDS)
            feat = tokens[s_idx, words][valid[s_idx, words]].mean(0)
            region_text.append(feat / np.linalg.norm(feat))
            region_img.append(bag_image[bag_ids[e]].numpy())
            region_grp.append(regions[e])
            region_ids.append(entry_img[e])
    ref_single = np_info_nce(region_text, region_img, 50.0, region_grp, region_ids)
    assert losses['loss_single'].item() == pytest.approx(0.1 * ref_single, rel=1e-5)

    # second batch from other images: last batch's features are extra negatives
    losses2 = run(kd, clip, head, make_batch(img_ids=(13, 14)), seed=3)
    bag_text2 = clip.calls['text_out'][1]
    bag_image2 = clip.calls['image_out'][1]
    ref2 = np_info_nce(bag_text2, bag_image2[seq_bag], 30.0, seq_bag, [i + 2 for i in seq_img],
                       bag_text, seq_img, bag_image[seq_bag], seq_img)
    assert losses2['loss_bag'].item() == pytest.approx(ref2, rel=1e-5)
    assert losses2['loss_bag'].item() > losses['loss_bag'].item()
    # one image seen twice: every queued entry is masked, the loss is the in-batch one
    kd_same = copy.deepcopy(fresh).train()
    one = make_batch(num_imgs=1, img_ids=(11,))
    first = run(kd_same, FakeClip(constant_dense=True), FakeRoIHead(), one, seed=3)
    again = run(kd_same, FakeClip(constant_dense=True), FakeRoIHead(), one, seed=3)
    assert len(kd_same.queues['bag_text']) > 0 and len(kd_same.queues['single_text']) > 0
    assert again['loss_bag'].item() == pytest.approx(first['loss_bag'].item(), rel=1e-6)
    assert again['loss_single'].item() == pytest.approx(first['loss_single'].item(), rel=1e-6)


def test_gradients_reach_the_student_not_the_teacher():
    kd, clip, head = make_kd(), FakeClip(), FakeRoIHead()
    kd.train()
    feats, rpn, inputs, metas = batch = make_batch()
    losses = run(kd, clip, head, batch)
    assert set(losses) == {'loss_bag', 'loss_single'}
    assert all(v.dim() == 0 and torch.isfinite(v) and v.item() > 0 for v in losses.values())
    (losses['loss_bag'] + losses['loss_single']).backward()
    assert feats[0].grad.abs().sum() > 0
    assert head.fc.weight.grad.abs().sum() > 0
    for name, p in kd.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for p in list(clip.image_proj.parameters()) + list(clip.dense_proj.parameters()):
        assert p.grad is None
    # the single-region loss alone also reaches the RoI head
    kd2, head2 = make_kd(bag_weight=0.0), FakeRoIHead()
    run(kd2, FakeClip(), head2, make_batch())['loss_single'].backward()
    assert head2.fc.weight.grad.abs().sum() > 0


def test_training_steps_backpropagate_through_queued_negatives():
    """forward -> queue push -> backward, twice: the push must not break the saved graph."""
    kd, clip, head = make_kd(), FakeClip(), FakeRoIHead()
    kd.train()
    for step, ids in enumerate(((11, 12), (13, 14))):
        losses = run(kd, clip, head, make_batch(img_ids=ids), seed=step)
        kd.zero_grad()
        (losses['loss_bag'] + losses['loss_single']).backward()
        assert kd.pos_embed.proj[0].weight.grad.abs().sum() > 0
    assert len(kd.queues['bag_text']) > 0


def test_weights_scale_losses_and_seed_gives_same_result():
    ref = make_kd()
    base = run(copy.deepcopy(ref).train(), FakeClip(), FakeRoIHead(), make_batch(), seed=5)
    again = run(copy.deepcopy(ref).train(), FakeClip(), FakeRoIHead(), make_batch(), seed=5)
    assert base['loss_bag'].item() == again['loss_bag'].item()
    assert base['loss_single'].item() == again['loss_single'].item()
    heavy = copy.deepcopy(ref)
    heavy.bag_weight, heavy.single_weight = 2.0, 0.5
    out = run(heavy.train(), FakeClip(), FakeRoIHead(), make_batch(), seed=5)
    assert out['loss_bag'].item() == pytest.approx(2.0 * base['loss_bag'].item(), rel=1e-6)
    assert out['loss_single'].item() == pytest.approx(5.0 * base['loss_single'].item(), rel=1e-6)
    other = run(copy.deepcopy(ref).train(), FakeClip(), FakeRoIHead(), make_batch(), seed=6)
    assert other['loss_bag'].item() != base['loss_bag'].item()
    no_single = make_kd(single_weight=0.0).train()
    out = run(no_single, FakeClip(), FakeRoIHead(), make_batch())
    assert out['loss_single'].item() == 0.0 and len(no_single.queues['single_text']) == 0


def test_words_sent_to_clip_are_region_words_plus_positions_in_word_order():
    kd, clip, head = make_kd(word_drop_ratio=0.5), FakeClip(), FakeRoIHead()
    kd.train()
    feats, rpn, inputs, metas = batch = make_batch()
    run(kd, clip, head, batch, seed=4)
    samples = kd.sampler.sample(rpn, [(IMG_H, IMG_W)] * 2,
                                generator=torch.Generator().manual_seed(4))
    rois = head.calls[0]
    region_words = head(feats, rois).detach()
    entries, pos, seqs, n_reg, n_ent = [], [], [], 0, 0
    for s in samples:
        entries.append(s['region_index'] + n_reg)
        pos.append(s['box_pos'])
        seqs.append(torch.where(s['sequences'] >= 0, s['sequences'] + n_ent, -1))
        n_reg, n_ent = n_reg + len(s['regions']), n_ent + len(s['bag_ids'])
    # the RoI head ran once per distinct region, on image-indexed rois
    torch.testing.assert_close(rois[:, 1:], torch.cat([s['regions'] for s in samples]))
    assert rois[:, 0].tolist() == sum(([float(i)] * len(s['regions'])
                                       for i, s in enumerate(samples)), [])
    with torch.no_grad():
        entry_words = region_words[torch.cat(entries)] + kd.pos_embed(torch.cat(pos))
    bag_words, bag_valid = clip.calls['text_in'][0]
    seqs = torch.cat(seqs)
    width = int((seqs >= 0).sum(1).max())
    keep = {}
    for row, words, valid in zip(seqs, bag_words, bag_valid):
        members = row[row >= 0]
        expected = entry_words[members].flatten(0, 1)
        n = expected.shape[0]
        torch.testing.assert_close(words[:n], expected)
        assert not valid[n:].any() and words.shape[0] == width * NUM_WORDS
        for e, mask in zip(members.tolist(), valid[:n].view(-1, NUM_WORDS)):
            assert mask.any()  # >= 1 word of every region kept
            keep.setdefault(e, []).append(mask)
    assert len(keep) == len(entry_words)
    masks = torch.stack([m for ms in keep.values() for m in ms])
    assert 0.3 < masks.float().mean() < 0.8
    # dropout is drawn per sentence (as the reference's per-permutation masks): the two word
    # orders of a bag drop different words somewhere
    assert any(not torch.equal(ms[0], ms[1]) for ms in keep.values() if len(ms) == 2)
    # eval mode: nothing dropped
    kd.eval()
    run(kd, clip, head, batch, seed=4)
    present = (seqs[:, :width] >= 0).repeat_interleave(NUM_WORDS, 1)
    assert torch.equal(clip.calls['text_in'][-1][1], present)


def test_teacher_crops_are_clip_normalised_spanned_boxes():
    kd, clip, head = make_kd(), FakeClip(), FakeRoIHead()
    feats, rpn, inputs, metas = make_batch()
    # a linear ramp per channel: bilinear roi_align reproduces it exactly away from borders
    yy, xx = torch.meshgrid(torch.arange(IMG_H).float(), torch.arange(IMG_W).float(),
                            indexing='ij')
    coef = torch.tensor([[1.0, 0.5, 20.0], [0.3, 1.2, 40.0], [0.8, 0.8, 10.0]])
    raw = torch.stack([a * xx + b * yy + c for a, b, c in coef])[None].repeat(2, 1, 1, 1)
    inputs = det_normalise(raw)
    rpn = [torch.tensor([[30., 24., 46., 40., 0.9]])] * 2
    run(kd, clip, head, (feats, rpn, inputs, metas), seed=1)
    samples = kd.sampler.sample(rpn, [(IMG_H, IMG_W)] * 2,
                                generator=torch.Generator().manual_seed(1))
    spanned = torch.cat([s['spanned'] for s in samples])
    crops = clip.calls['image_in'][0]
    size = clip.image_size
    assert crops.shape == (len(spanned), 3, size, size)
    mean = torch.tensor(clip.image_mean).view(3, 1, 1) * 255
    std = torch.tensor(clip.image_std).view(3, 1, 1) * 255
    for crop, (x1, y1, x2, y2) in zip(crops, spanned.tolist()):
        # centre of output bin (i, j) in pixel-index coordinates (aligned=True: -0.5)
        cx = x1 - 0.5 + (torch.arange(size) + 0.5) * (x2 - x1) / size
        cy = y1 - 0.5 + (torch.arange(size) + 0.5) * (y2 - y1) / size
        gy, gx = torch.meshgrid(cy, cx, indexing='ij')
        expected = torch.stack([a * gx + b * gy + c for a, b, c in coef])
        torch.testing.assert_close(crop, (expected - mean) / std, atol=1e-4, rtol=1e-4)
    # CLIP statistics given in pixel units are used as they are
    kd_px = make_kd(clip_pixel_scale=1.0)
    crops_px = kd_px.clip_crops(inputs, DET_MEAN, DET_STD, clip,
                                torch.tensor([[0., 20., 20., 40., 40.]]))
    crops_auto = kd.clip_crops(inputs, DET_MEAN, DET_STD, clip,
                               torch.tensor([[0., 20., 20., 40., 40.]]))
    cm, cs = torch.tensor(clip.image_mean).view(3, 1, 1), torch.tensor(clip.image_std).view(3, 1, 1)
    torch.testing.assert_close(crops_px, (crops_auto * cs * 255 + cm * 255 - cm) / cs,
                               atol=1e-3, rtol=1e-4)


def test_pool_patches_averages_the_region():
    dense = torch.arange(8.).view(1, 1, 1, 8).expand(2, 3, 8, 8).clone()  # value = column
    dense[1] = dense[1].transpose(-1, -2).clone()  # bag 1: value = row
    dense[:, 1:] = 1.0  # other channels constant, so normalising keeps the ratio visible
    box_pos = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.3, 0.6, 0.2, 0.4], [0.4, 0.7, 0.4, 0.2]])
    bag_ids = torch.tensor([0, 0, 1])
    pooled = BaronKD.pool_patches(dense, bag_ids, box_pos)
    # linear map: the mean over the box is the value at its centre (index = 8 * c - 0.5)
    first = torch.tensor([8 * 0.5 - 0.5, 8 * 0.3 - 0.5, 8 * 0.7 - 0.5])
    expected = F.normalize(torch.stack([first, torch.ones(3), torch.ones(3)], 1), dim=-1)
    torch.testing.assert_close(pooled, expected, atol=1e-5, rtol=1e-5)


def test_pool_patches_samples_two_by_two_points_as_the_reference():
    """roi_align sampling ratio 2: the mean of bilinear samples at the 2 x 2 points of the box,
    computed here by hand (a non-linear map, where the sampling pattern matters)."""
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(1, 4, 7, 7, generator=g)
    box_pos = torch.tensor([[0.37, 0.52, 0.41, 0.33]])
    pooled = BaronKD.pool_patches(dense, torch.tensor([0]), box_pos)

    def bilinear(img, x, y):  # aligned=True: pixel centres at integer + 0.5
        x, y = x - 0.5, y - 0.5
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        val = 0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                          (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xx, yy = min(max(x0 + dx, 0), 6), min(max(y0 + dy, 0), 6)
            val = val + w * img[:, yy, xx]
        return val

    cx, cy, w, h = (box_pos[0] * 7).tolist()
    x1, y1 = cx - w / 2, cy - h / 2
    samples = [bilinear(dense[0], x1 + (i + 0.5) * w / 2, y1 + (j + 0.5) * h / 2)
               for i in range(2) for j in range(2)]
    expected = F.normalize(torch.stack(samples).mean(0), dim=0)
    torch.testing.assert_close(pooled[0], expected, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ queues
def test_feature_queue_is_fifo_and_not_saved():
    q = FeatureQueue(5, 2)
    assert len(q) == 0 and q.get()[0].shape == (0, 2)
    a = torch.arange(6.).view(3, 2)
    q.push(a, [1, 2, 3])
    feats, ids = q.get()
    torch.testing.assert_close(feats, a)
    assert ids.tolist() == [1, 2, 3]
    b = 10 + torch.arange(8.).view(4, 2)
    q.push(b, [4, 5, 6, 7])
    feats, ids = q.get()
    assert ids.tolist() == [4, 5, 6, 7, 1]  # newest first, the oldest two fell off
    torch.testing.assert_close(feats, torch.cat([b, a[:1]]))
    q.push(torch.ones(7, 2), list(range(20, 27)))  # more than fits: the first five
    assert q.get()[1].tolist() == [20, 21, 22, 23, 24]
    assert q.state_dict() == {}
    with pytest.raises(ValueError, match='>= 0'):
        q.push(torch.ones(1, 2), [-1])
    with pytest.raises(ValueError, match=r'\[n, 2\]'):
        q.push(torch.ones(1, 3), [1])
    with pytest.raises(ValueError, match='ids'):
        q.push(torch.ones(2, 2), [1])


def test_baron_kd_fills_queues_in_training_only():
    kd, clip, head = make_kd(queue_length=1024), FakeClip(), FakeRoIHead()
    kd.eval()
    run(kd, clip, head, make_batch())
    assert all(len(q) == 0 for q in kd.queues.values())
    kd.train()
    run(kd, clip, head, make_batch())
    n_seq = clip.calls['text_out'][-1].shape[0]
    valid = clip.calls['text_in'][-1][1]
    n_ent = int(valid.view(n_seq, -1, NUM_WORDS).any(2).sum())
    assert len(kd.queues['bag_text']) == len(kd.queues['bag_image']) == n_seq
    assert len(kd.queues['single_text']) == len(kd.queues['single_image']) == n_ent
    torch.testing.assert_close(kd.queues['bag_text'].get()[0], clip.calls['text_out'][-1])
    assert set(kd.queues['bag_text'].get()[1].tolist()) == {11, 12}
    assert not any('queue' in k for k in kd.state_dict())
    # images without img_id: fresh ids from a counter, never equal to earlier ones
    feats, rpn, inputs, metas = make_batch()
    for m in metas:
        del m['img_id']
    run(kd, clip, head, (feats, rpn, inputs, metas))
    run(kd, clip, head, (feats, rpn, inputs, metas))
    ids = kd.queues['bag_text'].get()[1]
    assert len(set(ids[ids >= 2 ** 40].tolist())) == 4


# ------------------------------------------------------------------ empty and bad inputs
def test_images_without_proposals():
    kd, clip, head = make_kd(), FakeClip(), FakeRoIHead()
    kd.train()
    feats, rpn, inputs, metas = make_batch()
    rpn[0] = torch.zeros(0, 5)
    losses = run(kd, clip, head, (feats, rpn, inputs, metas))
    assert torch.isfinite(losses['loss_bag']) and losses['loss_bag'] > 0
    assert (head.calls[0][:, 0] == 1).all()  # only the second image's regions
    assert set(kd.queues['bag_text'].get()[1].tolist()) == {12}
    # nothing at all: zero losses that still backpropagate, CLIP never called
    kd2, clip2 = make_kd(), FakeClip()
    losses = run(kd2, clip2, FakeRoIHead(), (feats, [torch.zeros(0, 5)] * 2, inputs, metas))
    assert losses['loss_bag'].item() == 0 and losses['loss_single'].item() == 0
    assert losses['loss_bag'].requires_grad
    (losses['loss_bag'] + losses['loss_single']).backward()
    assert all(p.grad is not None and (p.grad == 0).all() for p in kd2.parameters())
    assert not clip2.calls['text_in'] and not clip2.calls['image_in']


def test_instance_data_rpn_results():
    from mmengine.structures import InstanceData
    kd = make_kd()
    feats, rpn, inputs, metas = make_batch()
    as_instances = [InstanceData(bboxes=r[:, :4], scores=r[:, 4]) for r in rpn]
    a = run(copy.deepcopy(kd), FakeClip(), FakeRoIHead(), (feats, rpn, inputs, metas))
    b = run(copy.deepcopy(kd), FakeClip(), FakeRoIHead(), (feats, as_instances, inputs, metas))
    assert a['loss_bag'].item() == b['loss_bag'].item()


def test_bad_inputs_raise_clear_errors():
    kd, clip, head = make_kd(), FakeClip(), FakeRoIHead()
    feats, rpn, inputs, metas = make_batch()
    with pytest.raises(ValueError, match='boxes_to_words returned'):
        kd(feats, rpn, inputs, metas, DET_MEAN, DET_STD, clip,
           lambda f, r: torch.zeros(len(r), NUM_WORDS + 1, WORD_DIM))
    with pytest.raises(ValueError, match='embed_dim'):
        make_kd(embed_dim=EMBED + 1)(feats, rpn, inputs, metas, DET_MEAN, DET_STD, clip, head)
    with pytest.raises(ValueError, match='word_dim'):
        make_kd(word_dim=WORD_DIM * 2)(feats, rpn, inputs, metas, DET_MEAN, DET_STD, clip, head)
    with pytest.raises(ValueError, match='rpn results'):
        kd(feats, rpn[:1], inputs, metas, DET_MEAN, DET_STD, clip, head)
    with pytest.raises(ValueError, match='batch_inputs'):
        kd(feats, rpn, inputs[:, :1], metas, DET_MEAN, DET_STD, clip, head)
    with pytest.raises(ValueError, match='img_shape'):
        kd(feats, rpn, inputs, [dict(img_id=1)] * 2, DET_MEAN, DET_STD, clip, head)
    with pytest.raises(ValueError, match='3 values'):
        kd(feats, rpn, inputs, metas, DET_MEAN[:2], DET_STD, clip, head)
    with pytest.raises(TypeError, match='clip object lacks'):
        kd(feats, rpn, inputs, metas, DET_MEAN, DET_STD, object(), head)
    with pytest.raises(ValueError, match='word_drop_ratio'):
        make_kd(word_drop_ratio=1.0)

    class PooledOnlyClip(FakeClip):
        def encode_pseudo_text(self, words, valid_mask=None, layer=None, normalize=True):
            return super().encode_pseudo_text(words, valid_mask, layer, normalize)

    with pytest.raises(TypeError, match='word_token_mode'):
        kd(feats, rpn, inputs, metas, DET_MEAN, DET_STD, PooledOnlyClip(), head)
    out = make_kd(single_weight=0.0)(feats, rpn, inputs, metas, DET_MEAN, DET_STD,
                                     PooledOnlyClip(), head)
    assert out['loss_bag'] > 0 and out['loss_single'] == 0


def test_with_the_real_tiny_clip():
    from ovkit.clip import build_clip
    clip = build_clip(dict(model_name='tiny'))
    kd = make_kd(word_dim=clip.text_width, embed_dim=clip.embed_dim).train()
    head = FakeRoIHead()
    head.fc = nn.Linear(4 * 2 * 2, NUM_WORDS * clip.text_width)
    head.forward = lambda feats, rois: head.fc(roi_align(
        feats[0], rois, (2, 2), spatial_scale=0.25, sampling_ratio=2, aligned=True).flatten(1)
    ).view(-1, NUM_WORDS, clip.text_width)
    losses = run(kd, clip, head, make_batch())
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    (losses['loss_bag'] + losses['loss_single']).backward()
    assert head.fc.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in clip.parameters())
    assert len(kd.queues['bag_image']) > 0


def test_registered_in_mmdet_models():
    from mmdet.registry import MODELS
    kd = MODELS.build(dict(type='BaronKD', num_words=NUM_WORDS, word_dim=WORD_DIM,
                           embed_dim=EMBED, pos_feats=8, sampler=dict(max_groups=2)))
    assert isinstance(kd, BaronKD) and kd.sampler.max_groups == 2


def test_single_region_features_default_to_the_reference_value_path():
    clip = FakeClip()
    run(make_kd().train(), clip, FakeRoIHead(), make_batch())
    assert clip.calls['word_token_mode'] == ['maskclip'] and clip.calls['dense_mode'] == [
        'maskclip']
    clip = FakeClip()
    run(make_kd(single_features='plain').train(), clip, FakeRoIHead(), make_batch())
    assert clip.calls['word_token_mode'] == ['causal'] and clip.calls['dense_mode'] == ['plain']
    clip = FakeClip()  # no single-region loss: no dense features asked for
    run(make_kd(single_weight=0.0).train(), clip, FakeRoIHead(), make_batch())
    assert clip.calls['dense_mode'] == [None]
    with pytest.raises(ValueError, match='single_features'):
        make_kd(single_features='dense')


def test_boxes_cache_brings_back_confident_centres_from_start_iter():
    kd = make_kd(boxes_cache=dict(start_iter=1, num_boxes=10, nms_thr=0.1, score_thr=0.85))
    kd.train()
    feats, rpn, inputs, metas = make_batch()
    confident = [torch.tensor([[8., 8., 24., 26., 0.95]])] * 2
    weak = [torch.tensor([[40., 30., 58., 48., 0.5]])] * 2
    head = FakeRoIHead()
    run(kd, FakeClip(), head, (feats, confident, inputs, metas))  # iteration 0: no cache
    assert int(kd.kd_iter) == 1 and len(kd.boxes_cache) == 0
    run(kd, FakeClip(), head, (feats, confident, inputs, metas))  # iteration 1: stored
    assert sorted(kd.boxes_cache.boxes) == [11, 12]
    head.calls.clear()
    run(kd, FakeClip(), head, (feats, weak, inputs, metas))
    # the weak proposal alone would be the (fallback) centre; the cached box outscores it
    samples = kd.sampler.sample([torch.tensor([[8., 8., 24., 26., 0.95]])] * 2,
                                [(IMG_H, IMG_W)] * 2, generator=torch.Generator().manual_seed(0))
    regions = torch.cat([s['regions'] for s in samples])
    torch.testing.assert_close(head.calls[0][:, 1:], regions)
    # eval mode neither counts nor reads the cache
    kd.eval()
    run(kd, FakeClip(), head, (feats, weak, inputs, metas))
    assert int(kd.kd_iter) == 3 and 'kd_iter' in kd.state_dict()
