"""VCTree: spanning trees, their binary form, batched TreeLSTMs against a node-by-node
recursion, the pair score net, and the predictor (shapes, gradients, the tree it builds)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from scipy.sparse.csgraph import minimum_spanning_tree

import ovkit.sgg  # noqa: F401
from ovkit.sgg.predictors import vctree as vctree_mod
from ovkit.sgg.predictors.treelstm import (
    BiTreeLSTM,
    TreeLSTMDecoder,
    TreeLSTMDown,
    TreeLSTMUp,
    max_spanning_tree,
    to_binary_forest,
)
from ovkit.sgg.predictors.vctree import overlap_info
from tests.sgg.model_helpers import NUM_CLASSES, NUM_PREDICATES, fake_proposals, fake_statistics

C1, P1 = NUM_CLASSES + 1, NUM_PREDICATES + 1
ROI, UNION = 12, 10


def is_spanning_tree(root, children, n):
    parent = {c: p for p, kids in enumerate(children) for c in kids}
    if len(parent) != n - 1 or root in parent:
        return False
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node in seen:
            return False
        seen.add(node)
        stack.extend(children[node])
    return seen == set(range(n))


@pytest.mark.parametrize('n', [1, 2, 5, 9])
def test_max_spanning_tree_spans_and_is_maximum(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        s = rng.uniform(0.1, 1.0, size=(n, n))
        s = s + s.T                                    # symmetric: a classical MST problem
        root, children = max_spanning_tree(s)
        assert root == int(np.argmax(s.mean(1)))
        assert is_spanning_tree(root, children, n)
        if n > 1:
            ours = sum(s[p, c] for p, kids in enumerate(children) for c in kids)
            # scipy's minimum spanning tree of (3 - s) is a maximum spanning tree of s
            best = 3.0 * (n - 1) - minimum_spanning_tree(3.0 - s).sum()
            assert ours == pytest.approx(best)


def test_binary_forest_is_left_child_right_sibling():
    trees = [(0, [[1, 2, 3], [4], [], [], []]), (1, [[], [0, 2], []])]
    f = to_binary_forest(trees)
    left, right, parent = f.left.tolist(), f.right.tolist(), f.parent.tolist()
    # image 0: 0 -> (1, 2, 3), 1 -> 4; image 1 (offset 5): 6 -> (5, 7)
    assert left[:5] == [1, 4, -1, -1, -1] and right[:5] == [-1, 2, 3, -1, -1]
    assert parent[:5] == [-1, 0, 1, 2, 1]
    assert left[5:] == [-1, 5, -1] and right[5:] == [7, -1, -1] and parent[5:] == [6, -1, 5]
    assert f.image.tolist() == [0] * 5 + [1] * 3
    # every level is computed after the level it reads
    done = set()
    for idx in f.up_levels:
        for i in idx.tolist():
            assert all(c in done for c in (left[i], right[i]) if c >= 0)
        done |= set(idx.tolist())
    assert done == set(range(8))
    done = set()
    for idx in f.down_levels:
        for i in idx.tolist():
            assert parent[i] < 0 or parent[i] in done
        done |= set(idx.tolist())


def recursive_up(cell, forest, feats):
    """SGB's BiTreeLSTM_Foreward: recursion from each root, one node at a time."""
    left, right, parent = forest.left.tolist(), forest.right.tolist(), forest.parent.tolist()
    h = {}
    c = {}
    zero = torch.zeros(1, cell.h_dim)

    def visit(node):
        for k in (left[node], right[node]):
            if k >= 0:
                visit(k)
        lc, lh = (c[left[node]], h[left[node]]) if left[node] >= 0 else (zero, zero)
        rc, rh = (c[right[node]], h[right[node]]) if right[node] >= 0 else (zero, zero)
        x = feats[node:node + 1]
        g = cell.ioffux(x) + cell.ioffuh_left(lh) + cell.ioffuh_right(rh)
        i, o, fl, fr, u, r = torch.split(g, g.size(1) // 6, dim=1)
        cc = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(fl) * lc + torch.sigmoid(fr) * rc
        hh = torch.sigmoid(o) * torch.tanh(cc)
        hh = torch.sigmoid(r) * hh + (1 - torch.sigmoid(r)) * cell.px(x)
        c[node], h[node] = cc, hh

    for node in range(len(left)):
        if parent[node] < 0:
            visit(node)
    return torch.cat([h[i] for i in range(len(left))])


def recursive_down(cell, forest, feats):
    left, right, parent = forest.left.tolist(), forest.right.tolist(), forest.parent.tolist()
    h, c = {}, {}
    zero = torch.zeros(1, cell.h_dim)

    def visit(node):
        p = parent[node]
        pc, ph = (c[p], h[p]) if p >= 0 else (zero, zero)
        x = feats[node:node + 1]
        g = cell.iofux(x) + cell.iofuh(ph)
        i, o, f, u, r = torch.split(g, g.size(1) // 5, dim=1)
        cc = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f) * pc
        hh = torch.sigmoid(o) * torch.tanh(cc)
        c[node] = cc
        h[node] = torch.sigmoid(r) * hh + (1 - torch.sigmoid(r)) * cell.px(x)
        for k in (left[node], right[node]):
            if k >= 0:
                visit(k)

    for node in range(len(left)):
        if parent[node] < 0:
            visit(node)
    return torch.cat([h[i] for i in range(len(left))])


def random_forest(seed=0, sizes=(6, 1, 4)):
    rng = np.random.default_rng(seed)
    return to_binary_forest([max_spanning_tree(rng.uniform(size=(n, n))) for n in sizes])


def test_batched_treelstms_equal_node_by_node_recursion():
    torch.manual_seed(0)
    forest = random_forest()
    feats = torch.randn(forest.num_nodes, 7)
    up, down = TreeLSTMUp(7, 4).eval(), TreeLSTMDown(7, 4).eval()
    torch.testing.assert_close(up(forest, feats), recursive_up(up, forest, feats))
    torch.testing.assert_close(down(forest, feats), recursive_down(down, forest, feats))
    bi = BiTreeLSTM(7, 8, num_layers=2).eval()
    out = bi(forest, feats)
    first = torch.cat([recursive_up(bi.up[0], forest, feats),
                       recursive_down(bi.down[0], forest, feats)], 1)
    second = torch.cat([recursive_up(bi.up[1], forest, first),
                        recursive_down(bi.down[1], forest, first)], 1)
    torch.testing.assert_close(out, second)


def test_tree_decoder_feeds_the_parent_label():
    torch.manual_seed(0)
    forest = random_forest(1, (5,))
    dec = TreeLSTMDecoder(C1, embed_dim=3, in_dim=6, h_dim=4).eval()
    feats = torch.randn(5, 6)
    dists, commits = dec(forest, feats)
    assert torch.equal(commits, dists[:, 1:].argmax(1) + 1)
    # the same recursion, feeding [input, embedding of the parent's committed label]
    parent = forest.parent.tolist()
    prev = torch.tensor([0 if parent[i] < 0 else int(commits[parent[i]]) + 1 for i in range(5)])
    x = torch.cat([feats, dec.obj_embed(prev)], 1)
    torch.testing.assert_close(dec.out(recursive_down(dec.lstm, forest, x)), dists)


def test_overlap_info_by_hand():
    props = fake_proposals((3,))
    b = props[0].bboxes
    info = overlap_info(props)
    for i in range(3):
        inter = []
        ious = []
        for j in range(3):
            w = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]) + 1
            h = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]) + 1
            a = max(float(w), 0) * max(float(h), 0)
            ai = float((b[i, 2] - b[i, 0] + 1) * (b[i, 3] - b[i, 1] + 1))
            aj = float((b[j, 2] - b[j, 0] + 1) * (b[j, 3] - b[j, 1] + 1))
            inter.append(a)
            ious.append(a / (ai + aj - a + 1e-9))
        count = sum(x > 0 for x in inter)
        expect = [count, sum(inter) / 1024 ** 2, sum(ious), sum(inter) / 1024 ** 2 / count,
                  sum(ious) / count, float((b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1])) / 1024 ** 2]
        np.testing.assert_allclose(info[i].numpy(), expect, rtol=1e-5)


def build(mode, **kw):
    cfg = dict(type='VCTreePredictor', mode=mode, num_classes=NUM_CLASSES,
               num_predicates=NUM_PREDICATES, in_channels=ROI, union_channels=UNION,
               embed_dim=6, hidden_dim=8, pooling_dim=14, dropout=0.2)
    cfg.update(kw)
    torch.manual_seed(0)
    pred = MODELS.build(cfg)
    pred.load_statistics(fake_statistics())
    return pred


def inputs(mode, num_boxes=(4, 3, 2)):
    props = fake_proposals(num_boxes, mode=mode)
    pairs = [torch.tensor([(i, j) for i in range(n) for j in range(n) if i != j])
             for n in num_boxes]
    roi = torch.randn(sum(num_boxes), ROI)
    union = torch.randn(sum(len(p) for p in pairs), UNION)
    binarys = []
    for n in num_boxes:
        b = torch.zeros(n, n, dtype=torch.long)
        b[0, 1] = b[1, 0] = 1
        binarys.append(b)
    return props, pairs, roi, union, binarys


def test_pair_score_net_equals_the_formula():
    pred = build('sgcls').eval()
    ctx = pred.context_layer
    props, _, roi, _, _ = inputs('sgcls', (3,))
    logits = props[0].predict_logits
    inp = torch.randn(3, 128 * 4)
    got = ctx.pair_scores([3], inp, logits)[0]
    p = F.softmax(logits, 1)
    feat = F.relu(ctx.score_pre(inp))
    sub, obj = F.relu(ctx.score_sub(feat)), F.relu(ctx.score_obj(feat))
    w = ctx.bi_freq_prior.weight.view(C1, C1)
    for i in range(3):
        for j in range(3):
            co = p[i] @ w @ p[j]
            vis = ctx.vision_prior(torch.cat([sub[j] * obj[i], sub[j], obj[i], co[None]]))
            torch.testing.assert_close(got[i, j], (torch.sigmoid(vis) * co)[0])
    # the prior starts symmetric: summed log-frequencies of both orders
    pd = torch.from_numpy(fake_statistics()['pred_dist']).sum(-1)
    torch.testing.assert_close(w, pd + pd.t())


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_vctree_shapes_gradients_and_spanning_trees(mode, monkeypatch):
    pred = build(mode).train()
    props, pairs, roi, union, binarys = inputs(mode)
    seen = []
    real = vctree_mod.to_binary_forest
    monkeypatch.setattr(vctree_mod, 'to_binary_forest',
                        lambda trees, device=None: seen.append(trees) or real(trees, device))
    rel_labels = [torch.randint(0, P1, (len(p),)) for p in pairs]
    obj, rel, extra = pred(props, pairs, roi, union, rel_labels=rel_labels,
                           rel_binarys=binarys)
    assert [o.shape for o in obj] == [(4, C1), (3, C1), (2, C1)]
    assert [r.shape for r in rel] == [(12, P1), (6, P1), (2, P1)]
    # one spanning tree over exactly the boxes of each image
    assert [len(ch) for _, ch in seen[0]] == [4, 3, 2]
    assert all(is_spanning_tree(root, ch, len(ch)) for root, ch in seen[0])
    # the auxiliary loss alone trains the pair scorer (the tree itself is discrete)
    extra['loss_vctree_binary'].backward(retain_graph=True)
    ctx = pred.context_layer
    for name in ('score_pre', 'score_sub', 'score_obj', 'vision_prior', 'bi_freq_prior',
                 'box_embed', 'overlap_embed', 'obj_reduce', 'emb_reduce'):
        grads = [p.grad for p in getattr(ctx, name).parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
    pred.zero_grad()
    loss = F.cross_entropy(torch.cat(rel), torch.cat(rel_labels)) + extra['loss_vctree_binary']
    if mode != 'predcls':
        loss = loss + F.cross_entropy(torch.cat(obj), torch.cat([p.labels for p in props]))
    loss.backward()
    missing = [n for n, p in pred.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient reaches {missing}'
    pred.eval()
    if mode == 'sgdet':
        for p in props:
            del p.labels
    with torch.no_grad():
        obj, rel, extra = pred(props, pairs, roi, union)
    assert extra == {} and [r.shape for r in rel] == [(12, P1), (6, P1), (2, P1)]
