"""Predictors: output shapes, gradients, label handling, and pieces checked a second way."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS

import ovkit.sgg  # noqa: F401
from ovkit.sgg.glove import GLOVE_URL, class_name_vectors, load_glove
from ovkit.sgg.predictors.base import (
    FrequencyBias,
    box_overlaps_per_class,
    nms_class_assignment,
    to_onehot,
)
from ovkit.sgg.predictors.motifs import DecoderRNN, centre_x_order, run_packed
from ovkit.sgg.sampling import box_iou_legacy
from tests.sgg.model_helpers import NUM_CLASSES, NUM_PREDICATES, fake_proposals, fake_statistics

C1, P1 = NUM_CLASSES + 1, NUM_PREDICATES + 1
ROI, UNION = 12, 10


def build_predictor(kind, mode, **kw):
    cfg = dict(type=kind, mode=mode, num_classes=NUM_CLASSES, num_predicates=NUM_PREDICATES,
               in_channels=ROI, union_channels=UNION)
    if kind == 'MotifsPredictor':
        cfg.update(embed_dim=6, hidden_dim=8, pooling_dim=14, dropout=0.2)
    if kind == 'IMPPredictor':
        cfg.update(hidden_dim=8, pooling_dim=14)
    cfg.update(kw)
    torch.manual_seed(0)
    pred = MODELS.build(cfg)
    if pred.uses_statistics:
        pred.load_statistics(fake_statistics())
    return pred


def inputs(mode, num_boxes=(4, 3, 2)):
    props = fake_proposals(num_boxes, mode=mode)
    pairs = [torch.tensor([(i, j) for i in range(n) for j in range(n) if i != j])
             for n in num_boxes]
    roi = torch.randn(sum(num_boxes), ROI)
    union = torch.randn(sum(len(p) for p in pairs), UNION)
    return props, pairs, roi, union


ALL = [(k, m) for k in ('MotifsPredictor', 'IMPPredictor', 'FrequencyPredictor')
       for m in ('predcls', 'sgcls', 'sgdet')]


@pytest.mark.parametrize('kind,mode', ALL)
def test_output_shapes_and_every_trainable_parameter_gets_a_gradient(kind, mode):
    pred = build_predictor(kind, mode)
    pred.train()
    props, pairs, roi, union = inputs(mode)
    rel_labels = [torch.randint(0, P1, (len(p),)) for p in pairs]
    obj, rel, extra = pred(props, pairs, roi, union, rel_labels=rel_labels)
    assert [o.shape for o in obj] == [(4, C1), (3, C1), (2, C1)]
    assert [r.shape for r in rel] == [(12, P1), (6, P1), (2, P1)]
    assert extra == {}
    loss = F.cross_entropy(torch.cat(rel), torch.cat(rel_labels))
    if mode != 'predcls' and torch.cat(obj).requires_grad:
        loss = loss + F.cross_entropy(torch.cat(obj), torch.cat([p.labels for p in props]))
    loss.backward()
    missing = [n for n, p in pred.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient reaches {missing}'
    # eval mode runs without ground-truth labels in SGDet
    pred.eval()
    if mode == 'sgdet':
        for p in props:
            del p.labels
    with torch.no_grad():
        obj, rel, _ = pred(props, pairs, roi, union)
    assert [r.shape for r in rel] == [(12, P1), (6, P1), (2, P1)]


@pytest.mark.parametrize('kind', ['MotifsPredictor', 'IMPPredictor', 'FrequencyPredictor'])
def test_predcls_object_logits_are_the_ground_truth(kind):
    pred = build_predictor(kind, 'predcls').eval()
    props, pairs, roi, union = inputs('predcls')
    obj, _, _ = pred(props, pairs, roi, union)
    for o, p in zip(obj, props):
        probs = F.softmax(o, dim=1)
        assert torch.equal(probs.argmax(1), p.labels)
        assert torch.all(probs.max(1).values == 1.0)  # SGB's PredCls object score of 1


def test_frequency_predictor_is_the_statistics_lookup():
    stats = fake_statistics()
    pred = build_predictor('FrequencyPredictor', 'predcls').eval()
    props, pairs, roi, union = inputs('predcls')
    _, rel, _ = pred(props, pairs, roi, union)
    for r, p, pr in zip(rel, props, pairs):
        s, o = p.labels[pr[:, 0]], p.labels[pr[:, 1]]
        expect = torch.from_numpy(stats['pred_dist'])[s, o]
        torch.testing.assert_close(r, expect)
    # SGCls at test time: the detector's best foreground class picks the row
    pred = build_predictor('FrequencyPredictor', 'sgcls').eval()
    props, pairs, roi, union = inputs('sgcls')
    _, rel, _ = pred(props, pairs, roi, union)
    lab = props[0].predict_logits[:, 1:].argmax(1) + 1
    expect = torch.from_numpy(stats['pred_dist'])[lab[pairs[0][:, 0]], lab[pairs[0][:, 1]]]
    torch.testing.assert_close(rel[0], expect)


def test_frequency_bias_lookups_agree():
    stats = fake_statistics()
    fb = FrequencyBias(C1, P1)
    fb.load_pred_dist(stats['pred_dist'])
    labels = torch.tensor([[1, 2], [0, 5], [3, 3]])
    by_label = fb.index_with_labels(labels)
    probs = torch.stack([to_onehot(labels[:, 0], C1, 30).softmax(1),
                         to_onehot(labels[:, 1], C1, 30).softmax(1)], dim=1)
    torch.testing.assert_close(fb.index_with_probability(probs), by_label)
    torch.testing.assert_close(by_label[1], torch.from_numpy(stats['pred_dist'][0, 5]))
    with pytest.raises(ValueError, match='num_predicates'):
        fb.load_pred_dist(np.zeros((C1, C1, P1 + 1)))


def test_motifs_uses_the_frequency_bias_of_the_pair_labels():
    """With the visual path switched off and the context weights zeroed, Motifs' predicate
    logits are exactly the frequency bias of the pair labels (plus the zero-weight linear)."""
    pred = build_predictor('MotifsPredictor', 'predcls', use_vision=False).eval()
    torch.nn.init.zeros_(pred.rel_compress.weight)
    torch.nn.init.zeros_(pred.rel_compress.bias)
    props, pairs, roi, union = inputs('predcls')
    _, rel, _ = pred(props, pairs, roi, None)
    stats = fake_statistics()
    for r, p, pr in zip(rel, props, pairs):
        expect = torch.from_numpy(stats['pred_dist'])[p.labels[pr[:, 0]], p.labels[pr[:, 1]]]
        torch.testing.assert_close(r, expect)


def test_centre_x_order_and_packed_lstm_equal_per_image_runs():
    props = fake_proposals((4, 2, 3))
    orders = centre_x_order(props)
    start = 0
    for o, p in zip(orders, props):
        cx = (p.bboxes[:, 0] + p.bboxes[:, 2]) / 2
        assert torch.all(cx[o - start][:-1] >= cx[o - start][1:])
        start += len(p)
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(5, 7, bidirectional=True)
    feats = torch.randn(9, 5)
    out = run_packed(lstm, feats, orders)
    for o in orders:  # each image alone, sequence-first, no packing
        alone = lstm(feats[o][:, None])[0][:, 0]
        torch.testing.assert_close(out[o], alone)


def test_decoder_teacher_forcing_and_greedy_commitments():
    torch.manual_seed(0)
    dec = DecoderRNN(C1, embed_dim=4, inputs_dim=6, hidden_dim=8, rnn_drop=0.0)
    feats = torch.randn(5, 6)
    orders = [torch.tensor([2, 0, 1]), torch.tensor([4, 3])]
    labels = torch.tensor([3, 0, 1, 2, 5])
    dec.train()
    logits, committed = dec(feats, orders, labels=labels)
    assert logits.shape == (5, C1)
    assert torch.equal(committed[labels > 0], labels[labels > 0])
    assert committed[1] == logits[1, 1:].argmax() + 1  # background -> its own prediction
    dec.eval()
    logits, committed = dec(feats, orders)
    assert torch.equal(committed, logits[:, 1:].argmax(1) + 1)
    # one image decoded alone gives the same result as in the batch
    alone_logits, _ = dec(feats, [orders[0]])
    torch.testing.assert_close(alone_logits[orders[0]], logits[orders[0]])


def test_nms_class_assignment_hand_example():
    box = torch.tensor([0., 0., 10., 10.])
    # two nearly identical boxes, both best at class 1; a far box best at class 1 too
    boxes = torch.stack([box, box + 1, box + 50])[:, None].expand(3, 3, 4).clone()
    probs = torch.tensor([[0.0, 0.9, 0.1], [0.0, 0.8, 0.2], [0.0, 0.7, 0.3]])
    labels = nms_class_assignment(boxes, probs, thr=0.5)
    assert labels.tolist() == [1, 2, 1]
    ov = box_overlaps_per_class(boxes)
    torch.testing.assert_close(ov[:, :, 0], box_iou_legacy(boxes[:, 0], boxes[:, 0]))


def test_imp_message_passing_equals_dense_incidence_form():
    """SGB writes the node update with dense sub2rel / obj2rel matrices; check ours."""
    pred = build_predictor('IMPPredictor', 'sgcls').eval()
    props, pairs, roi, union = inputs('sgcls', (3, 2))
    obj, rel, _ = pred(props, pairs, roi, union)
    u = pred.up_dim(union)
    glob = torch.cat([pairs[0], pairs[1] + 3])
    n, m = 5, len(glob)
    sub2rel = torch.zeros(n, m)
    obj2rel = torch.zeros(n, m)
    sub2rel[glob[:, 0], torch.arange(m)] = 1
    obj2rel[glob[:, 1], torch.arange(m)] = 1
    o_rep, r_rep = pred.obj_unary(roi), torch.relu(pred.edge_unary(u))
    vert = [pred.node_gru(o_rep, torch.zeros(n, 8))]
    edge = [pred.edge_gru(r_rep, torch.zeros(m, 8))]
    for i in range(3):
        sv, ov = vert[i][glob[:, 0]], vert[i][glob[:, 1]]
        ws = pred.sub_vert_w_fc(torch.cat([sv, edge[i]], 1)) * sv
        wo = pred.obj_vert_w_fc(torch.cat([ov, edge[i]], 1)) * ov
        edge.append(pred.edge_gru(ws + wo, edge[i]))
        pre_out = pred.out_edge_w_fc(torch.cat([sv, edge[i]], 1)) * edge[i]
        pre_in = pred.in_edge_w_fc(torch.cat([ov, edge[i]], 1)) * edge[i]
        vert.append(pred.node_gru(sub2rel @ pre_out + obj2rel @ pre_in, vert[i]))
    torch.testing.assert_close(torch.cat(rel), pred.rel_fc(edge[-1]))
    torch.testing.assert_close(torch.cat(obj), pred.obj_fc(vert[-1]))


def test_glove_loader_reads_local_file(tmp_path):
    rng = np.random.default_rng(0)
    table = {w: rng.normal(size=6).astype(np.float32)
             for w in ['the', 'light', 'traffic', 'start', 'tree']}
    with open(tmp_path / 'glove.6B.6d.txt', 'w') as f:
        for w, v in table.items():
            f.write(w + ' ' + ' '.join(f'{x:.6f}' for x in v) + '\n')
    got = load_glove(str(tmp_path), ['tree', 'nope'], dim=6)
    assert set(got) == {'tree'}
    np.testing.assert_allclose(got['tree'], table['tree'], atol=1e-6)
    vecs = class_name_vectors(['tree', 'traffic light', '__background__'], str(tmp_path), dim=6)
    np.testing.assert_allclose(vecs[0].numpy(), table['tree'], atol=1e-6)
    # SGB: a multi-word name takes its longest word ('traffic')
    np.testing.assert_allclose(vecs[1].numpy(), table['traffic'], atol=1e-6)
    assert vecs.shape == (3, 6)


def test_glove_missing_file_names_key_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        class_name_vectors(['tree'], str(tmp_path / 'nowhere'), dim=200,
                           key='model.relation_head.predictor.glove_dir')
    msg = str(err.value)
    assert 'model.relation_head.predictor.glove_dir' in msg
    assert GLOVE_URL in msg and 'glove.6B.200d.txt' in msg


def test_motifs_word_vectors_go_into_all_embeddings(tmp_path):
    pred = build_predictor('MotifsPredictor', 'sgcls')
    names = ['__background__'] + [f'c{i}' for i in range(NUM_CLASSES)]
    rng = np.random.default_rng(1)
    table = {w: rng.normal(size=6) for w in names[1:] + ['start']}
    with open(tmp_path / 'glove.6B.6d.txt', 'w') as f:
        for w, v in table.items():
            f.write(w + ' ' + ' '.join(map(str, v)) + '\n')
    pred.load_word_vectors(names, str(tmp_path), key='k')
    ctx = pred.context_layer
    np.testing.assert_allclose(ctx.obj_embed1.weight[1].detach().numpy(), table['c0'], atol=1e-6)
    np.testing.assert_allclose(ctx.obj_embed2.weight[3].detach().numpy(), table['c2'], atol=1e-6)
    np.testing.assert_allclose(ctx.decoder_rnn.obj_embed.weight[0].detach().numpy(),
                               table['start'], atol=1e-6)
    np.testing.assert_allclose(ctx.decoder_rnn.obj_embed.weight[2].detach().numpy(),
                               table['c0'], atol=1e-6)
