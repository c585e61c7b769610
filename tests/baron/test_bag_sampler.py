"""BagSampler: geometry, counts, determinism, a per-proposal reference and exact distributions."""
import itertools
import math

import pytest
import torch

from ovkit.baron.bag_sampler import BagSampler, _distinct_ranks, _unrank

NEIGH = (0, 1, 2, 3, 5, 6, 7, 8)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """Tiny tensors: on a shared 2-core machine thread hand-offs cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_centres(n, img_shape, seed):
    """Boxes of varied size/aspect ratio, some touching the image border."""
    g = torch.Generator().manual_seed(seed)
    h, w = img_shape
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w / 3, h / 3]) + 8
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - wh)
    xy[: n // 4, 0] = 0  # on the left border
    xy[n // 4: n // 2, 1] = torch.tensor(float(h)) - wh[n // 4: n // 2, 1]  # on the bottom
    return torch.cat([xy, xy + wh], 1)


# ------------------------------------------------------------------ per-proposal reference
def reference_bags(s, centre, img_shape, group_u, perm_u):
    """Straightforward per-proposal BARON sampling from the same uniforms, in Python floats."""
    h, w = img_shape
    x1, y1, x2, y2 = centre
    bw, bh = x2 - x1 + 1e-12, y2 - y1 + 1e-12
    base = s.base_probability
    p = [base * (bh / bw) ** s.alpha] * 2 + [base * (bw / bh) ** s.alpha] * 2
    room = [x1 / bw, (w - x2) / bw, y1 / bh, (h - y2) / bh]
    p = [min(max(pi, 0.0), base) if r > s.cut_off_thr + s.interval else 0.0
         for pi, r in zip(p, room)]
    cell = [1.0] * 9
    for c in range(9):
        i, j = divmod(c, 3)
        if j == 0:
            cell[c] *= p[0]
        if j == 2:
            cell[c] *= p[1]
        if i == 0:
            cell[c] *= p[2]
        if i == 2:
            cell[c] *= p[3]
        if i != 1 and j != 1:
            cell[c] = math.sqrt(cell[c])
    # candidate subsets with their perturbed log-probabilities
    scored = []
    for code in range(256):
        members = [NEIGH[k] for k in range(8) if (code >> k) & 1]
        prob = 1.0
        for c in NEIGH:
            prob *= cell[c] if c in members else 1.0 - cell[c]
        if prob > 0:
            u = min(max(group_u[code], 1e-12), 1 - 1e-7)
            scored.append((math.log(prob) - math.log(-math.log(u)), sorted(members + [4])))
    scored.sort(key=lambda t: -t[0])
    num_valid = sum(cell[c] > 0 for c in NEIGH)
    num_groups = min(s.max_groups, math.factorial(num_valid), len(scored))

    cw, ch = x2 - x1, y2 - y1
    boxes = []
    for c in range(9):
        i, j = divmod(c, 3)
        dx, dy = (j - 1) * (1 + s.interval) * cw, (i - 1) * (1 + s.interval) * ch
        boxes.append([min(max(x1 + dx, 0), w), min(max(y1 + dy, 0), h),
                      min(max(x2 + dx, 0), w), min(max(y2 + dy, 0), h)])
    bags = []
    for slot in range(num_groups):
        cells = scored[slot][1]
        mb = [boxes[c] for c in cells]
        span = [min(b[0] for b in mb), min(b[1] for b in mb),
                max(b[2] for b in mb), max(b[3] for b in mb)]
        sw, sh = span[2] - span[0] + 1e-12, span[3] - span[1] + 1e-12
        pos = []
        for b in mb:
            nx1, ny1 = (b[0] - span[0]) / sw, (b[1] - span[1]) / sh
            nx2, ny2 = (b[2] - span[0]) / sw, (b[3] - span[1]) / sh
            pos.append([(nx1 + nx2) / 2, (ny1 + ny2) / 2, nx2 - nx1, ny2 - ny1])
        n = len(cells)
        total = math.factorial(n)
        chosen = []
        for j in range(min(total, s.max_permutations)):
            unused = sorted(set(range(total)) - set(chosen))
            chosen.append(unused[min(int(perm_u[slot][j] * (total - j)), total - j - 1)])
        orders = [next(itertools.islice(itertools.permutations(cells), r, None)) for r in chosen]
        bags.append(dict(cells=cells, span=span, pos=pos, orders=[list(o) for o in orders]))
    return bags


def split_by_centre(out):
    """Implementation output -> per centre, list of bags in the same form as the reference."""
    per_centre = [[] for _ in range(out['centres'].shape[0])]
    for g in range(out['spanned'].shape[0]):
        entries = (out['bag_ids'] == g).nonzero()[:, 0]
        seqs = out['sequences'][out['seq_bag'] == g]
        orders = [[int(out['cells'][e]) for e in row if e >= 0] for row in seqs]
        per_centre[int(out['bag_centre'][g])].append(dict(
            cells=out['cells'][entries].tolist(), span=out['spanned'][g].tolist(),
            pos=out['box_pos'][entries].tolist(), orders=orders))
    return per_centre


@pytest.mark.parametrize('cfg', [
    dict(),
    dict(alpha=1.0, base_probability=0.6, max_groups=5, max_permutations=3, interval=0.1,
         cut_off_thr=0.5),
    dict(alpha=0.0, base_probability=1.0, max_groups=4),  # p = 1: some subsets impossible
])
def test_vectorised_matches_per_proposal_reference(cfg):
    s = BagSampler(**cfg)
    img_shape = (300, 400)
    centres = random_centres(40, img_shape, seed=1)
    draws = s.draw(len(centres), torch.Generator().manual_seed(2))
    out = s.build_bags(centres, img_shape, draws)
    got = split_by_centre(out)
    for k in range(len(centres)):
        ref = reference_bags(s, centres[k].tolist(), img_shape, draws['group_u'][k].tolist(),
                             draws['perm_u'][k].tolist())
        assert len(got[k]) == len(ref), k
        for a, b in zip(got[k], ref):
            assert a['cells'] == b['cells']
            assert a['orders'] == b['orders']
            assert a['span'] == pytest.approx(b['span'], abs=1e-3)
            for pa, pb in zip(a['pos'], b['pos']):
                assert pa == pytest.approx(pb, abs=1e-4)


# ------------------------------------------------------------------ structure of the output
def test_bags_are_consistent_and_inside_the_image():
    s = BagSampler(alpha=1.0, base_probability=0.6)
    img_shape = (240, 320)
    centres = random_centres(60, img_shape, seed=3)
    out = s.build_bags(centres, img_shape, s.draw(60, torch.Generator().manual_seed(0)))
    h, w = img_shape
    lim = torch.tensor([w, h, w, h], dtype=torch.float32)
    for key in ('boxes', 'regions', 'spanned'):
        assert (out[key] >= 0).all() and (out[key] <= lim).all(), key
    # entries point at their region; positions reconstruct the boxes inside the spanned box
    torch.testing.assert_close(out['boxes'], out['regions'][out['region_index']])
    span = out['spanned'][out['bag_ids']]
    size = span[:, 2:] - span[:, :2]
    xy1 = span[:, :2] + (out['box_pos'][:, :2] - out['box_pos'][:, 2:] / 2) * size
    xy2 = span[:, :2] + (out['box_pos'][:, :2] + out['box_pos'][:, 2:] / 2) * size
    torch.testing.assert_close(torch.cat([xy1, xy2], 1), out['boxes'], atol=1e-3, rtol=0)
    assert (out['box_pos'] >= -1e-6).all() and (out['box_pos'] <= 1 + 1e-6).all()
    clipped_centres = torch.minimum(centres.clamp(min=0), lim)
    for g in range(out['spanned'].shape[0]):
        members = out['bag_ids'] == g
        mb = out['boxes'][members]
        # the spanned box is the bounding box of the members and contains the centre box
        torch.testing.assert_close(out['spanned'][g], torch.cat([mb[:, :2].min(0).values,
                                                                 mb[:, 2:].max(0).values]))
        assert 4 in out['cells'][members].tolist()
        c = clipped_centres[out['bag_centre'][g]]
        assert (out['spanned'][g, :2] <= c[:2]).all() and (out['spanned'][g, 2:] >= c[2:]).all()
        # word orders: distinct permutations of the bag's entries, min(n!, max_permutations)
        n = int(members.sum())
        seqs = out['sequences'][out['seq_bag'] == g]
        assert len(seqs) == min(math.factorial(n), s.max_permutations)
        entries = set(members.nonzero()[:, 0].tolist())
        rows = [tuple(r[r >= 0].tolist()) for r in seqs]
        assert len(set(rows)) == len(rows)
        assert all(set(r) == entries and len(r) == n for r in rows)
    # per centre: at most max_groups bags, distinct member sets, <= groups x perms sequences
    for k in range(len(centres)):
        bags = (out['bag_centre'] == k).nonzero()[:, 0]
        assert 1 <= len(bags) <= s.max_groups
        sets = {tuple(out['cells'][out['bag_ids'] == g].tolist()) for g in bags.tolist()}
        assert len(sets) == len(bags)
        n_seq = int(torch.isin(out['seq_bag'], bags).sum())
        assert n_seq <= s.max_groups * s.max_permutations
    # regions are the distinct (centre, cell) pairs: one region per pair, one pair per region
    pairs = list(zip(out['bag_centre'][out['bag_ids']].tolist(), out['cells'].tolist()))
    region_of = {}
    for pair, r in zip(pairs, out['region_index'].tolist()):
        assert region_of.setdefault(pair, r) == r
    assert sorted(region_of.values()) == list(range(len(out['regions'])))


def test_cell_geometry_and_direction_probabilities():
    s = BagSampler()  # interval -0.1: neighbours overlap the centre by 10 %
    centre = torch.tensor([[100., 100., 140., 180.]])  # w 40, h 80 (tall)
    cells = s.cell_boxes(centre, (1000, 1000))[0]
    torch.testing.assert_close(cells[3], torch.tensor([64., 100., 104., 180.]))  # left
    torch.testing.assert_close(cells[1], torch.tensor([100., 28., 140., 108.]))  # up
    torch.testing.assert_close(cells[8], torch.tensor([136., 172., 176., 252.]))
    prob = s.neighbour_probabilities(centre, (1000, 1000))[0]
    p_lr, p_ud = 0.3, 0.3 * 0.5 ** 3  # 0.3 * 2^3 is capped at base_probability
    expected = torch.tensor([math.sqrt(p_lr * p_ud), p_ud, math.sqrt(p_lr * p_ud),
                             p_lr, 1.0, p_lr,
                             math.sqrt(p_lr * p_ud), p_ud, math.sqrt(p_lr * p_ud)])
    torch.testing.assert_close(prob, expected)
    # left room 0.1*w: a left neighbour would keep 0.2 of itself inside (< cut_off 0.3)
    edge = torch.tensor([[4., 100., 44., 180.]])
    prob = s.neighbour_probabilities(edge, (1000, 1000))[0]
    assert prob[[0, 3, 6]].tolist() == [0.0, 0.0, 0.0] and prob[5] > 0
    # left room 0.25*w: 0.35 of the neighbour stays inside -> allowed
    edge = torch.tensor([[10., 100., 50., 180.]])
    assert s.neighbour_probabilities(edge, (1000, 1000))[0, 3] > 0


def test_neighbours_beyond_cut_off_are_never_sampled():
    s = BagSampler(alpha=0.0, base_probability=0.9)
    # at the left and top border of the image: only right/down neighbours may appear
    centres = torch.tensor([[2., 3., 50., 60.]]).repeat(500, 1)
    out = s.build_bags(centres, (200, 200), s.draw(500, torch.Generator().manual_seed(5)))
    assert set(out['cells'].tolist()) == {4, 5, 7, 8}
    # away from the border every neighbour shows up
    centres = torch.tensor([[80., 80., 120., 120.]]).repeat(500, 1)
    out = s.build_bags(centres, (200, 200), s.draw(500, torch.Generator().manual_seed(5)))
    assert set(out['cells'].tolist()) == set(range(9))


# ------------------------------------------------------------------ distributions
def test_bags_follow_sequential_rejection_sampling_exactly():
    """First two bags of a centre ~ P(a) P(b) / (1 - P(a)): two distinct rejection draws."""
    s = BagSampler()
    # at the top-left corner: only cells 5 (p 0.3), 7 (0.3 / 1.2^3) and 8 (their geometric
    # mean) can join, so there are 8 subsets and min(3, 3!) = 3 bags per centre
    centre = torch.tensor([[0., 0., 40., 48.]])
    n = 20000
    out = s.build_bags(centre.repeat(n, 1), (400, 400), s.draw(n, torch.Generator().manual_seed(7)))
    p5, p7 = 0.3, 0.3 / 1.2 ** 3
    p = {5: p5, 7: p7, 8: math.sqrt(p5 * p7)}
    subsets = [tuple(sorted([4] + [c for c, b in zip((5, 7, 8), bits) if b]))
               for bits in itertools.product((0, 1), repeat=3)]
    prob = {sub: math.prod(p[c] if c in sub else 1 - p[c] for c in (5, 7, 8)) for sub in subsets}
    assert torch.bincount(out['bag_centre']).tolist() == [3] * n
    cells_of_bag = {}
    for g, c in zip(out['bag_ids'].tolist(), out['cells'].tolist()):
        cells_of_bag.setdefault(g, []).append(c)
    counts = {}
    for k in range(n):
        pair = (tuple(cells_of_bag[3 * k]), tuple(cells_of_bag[3 * k + 1]))
        counts[pair] = counts.get(pair, 0) + 1
    for a in subsets:
        for b in subsets:
            if a == b:
                assert (a, b) not in counts
                continue
            expected = prob[a] * prob[b] / (1 - prob[a])
            sigma = math.sqrt(expected * (1 - expected) / n)
            assert abs(counts.get((a, b), 0) / n - expected) < 5 * sigma + 1e-4, (a, b)


def test_distinct_ranks_are_uniform_without_replacement():
    n = 30000
    u = torch.rand(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ranks, ok = _distinct_ranks(torch.full((n,), 6), u)
    assert ok.all() and (ranks[:, 0] != ranks[:, 1]).all()
    assert ranks.min() >= 0 and ranks.max() <= 5
    counts = torch.bincount(ranks[:, 0] * 6 + ranks[:, 1], minlength=36).double() / n
    off_diag = ~torch.eye(6, dtype=torch.bool).flatten()
    sigma = math.sqrt((1 / 30) * (29 / 30) / n)
    assert ((counts[off_diag] - 1 / 30).abs() < 5 * sigma).all()
    # fewer permutations than draws: only the existing ones are valid, all distinct
    u = torch.rand(4, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ranks, ok = _distinct_ranks(torch.tensor([1, 2, 6, 24]), u)
    assert ok.sum(1).tolist() == [1, 2, 5, 5]
    for row, valid in zip(ranks, ok):
        assert len(set(row[valid].tolist())) == int(valid.sum())


def test_unrank_is_lexicographic():
    for n in (1, 3, 4):
        perms = list(itertools.permutations(range(n)))
        got = _unrank(torch.full((len(perms),), n), torch.arange(len(perms)))
        assert [tuple(r[:n].tolist()) for r in got] == perms
        assert (got[:, n:] == -1).all()
    ranks = torch.tensor([0, 1, 40319, 200000, 362879])
    got = _unrank(torch.full((5,), 9), ranks)
    for r, row in zip(ranks.tolist(), got):
        assert tuple(row.tolist()) == next(itertools.islice(itertools.permutations(range(9)),
                                                            r, None))


# ------------------------------------------------------------------ sample(): filters, seeds
def test_sample_is_deterministic_under_a_seed():
    s = BagSampler(alpha=1.0, base_probability=0.6)
    props = [torch.cat([random_centres(30, (300, 400), seed=i), torch.ones(30, 1)], 1)
             for i in range(2)]
    shapes = [(300, 400)] * 2
    a = s.sample(props, shapes, generator=torch.Generator().manual_seed(11))
    b = s.sample(props, shapes, generator=torch.Generator().manual_seed(11))
    c = s.sample(props, shapes, generator=torch.Generator().manual_seed(12))
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert any(not torch.equal(x['sequences'], z['sequences']) or
               not torch.equal(x['spanned'], z['spanned']) for x, z in zip(a, c))


def test_select_centres_filters_and_nms():
    s = BagSampler(num_proposals=5)
    img = (100, 100)
    props = torch.tensor([
        [10., 10., 40., 40., 0.99],  # kept
        [12., 12., 42., 42., 0.98],  # suppressed by NMS (IoU with the first > 0.1)
        [60., 10., 62., 50., 0.97],  # too thin (w/h = 0.05)
        [60., 60., 61., 61., 0.96],  # too small (area 1e-4 of the image)
        [60., 60., 90., 90., 0.50],  # low objectness
        [55., 55., 95., 95., 0.95],  # kept
        [0., 50., 30., 80., 0.10],   # not in the top 5
    ])
    torch.testing.assert_close(s.select_centres(props, img), props[[0, 5], :4])
    # without a score column: the given order ranks them and objectness is not checked
    torch.testing.assert_close(s.select_centres(props[[4, 0], :4], img), props[[4, 0], :4])
    # nothing passes: the best-scored box of positive area is kept alone
    bad = torch.tensor([[5., 5., 5., 50., 0.99], [5., 5., 50., 6., 0.9], [5., 5., 6., 6., 0.2]])
    torch.testing.assert_close(s.select_centres(bad, img), bad[1:2, :4])
    assert s.select_centres(bad[:1], img).shape == (0, 4)
    # GT boxes join as score-1 centres and go through the same filters
    gt = torch.tensor([[60., 5., 95., 40.]])
    torch.testing.assert_close(s.select_centres(props[4:5], img, gt), gt)
    s_gt = BagSampler(use_gt=True)
    out = s_gt.sample([props[4:5]], [img], gt_bboxes=[gt])
    torch.testing.assert_close(out[0]['centres'], gt)
    out = BagSampler().sample([props[4:5]], [img], gt_bboxes=[gt])  # use_gt off: ignored
    torch.testing.assert_close(out[0]['centres'], props[4:5, :4])


def test_empty_and_degenerate_inputs():
    s = BagSampler()
    out = s.sample([torch.zeros(0, 5), torch.tensor([[3., 3., 3., 3., 0.9]])],
                   [(50, 60), (50, 60)], generator=torch.Generator().manual_seed(0))
    for res in out:
        assert res['boxes'].shape == (0, 4) and res['box_pos'].shape == (0, 4)
        assert res['spanned'].shape == (0, 4) and res['sequences'].shape == (0, 9)
        assert res['seq_bag'].numel() == 0 and res['regions'].shape == (0, 4)


def test_bad_inputs_raise_clear_errors():
    s = BagSampler()
    with pytest.raises(ValueError, match=r'\[n, 4\] or \[n, 5\]'):
        s.sample([torch.zeros(3, 6)], [(10, 10)])
    with pytest.raises(ValueError, match='image shapes'):
        s.sample([torch.zeros(0, 4)], [])
    with pytest.raises(TypeError, match='list of tensors'):
        s.sample(torch.zeros(2, 4), [(10, 10)])
    with pytest.raises(ValueError, match='img_shape'):
        s.sample([torch.zeros(0, 4)], [(0, 10)])
    with pytest.raises(ValueError, match='draws do not match'):
        s.build_bags(torch.zeros(2, 4), (10, 10), s.draw(3))
    for kwargs, msg in ((dict(shape_ratio_thr=1.5), 'shape_ratio_thr'),
                        (dict(max_groups=0), 'max_groups'),
                        (dict(max_permutations=0), 'max_permutations'),
                        (dict(base_probability=1.5), 'base_probability'),
                        (dict(interval=-1.0), 'interval'),
                        (dict(num_proposals=0), 'num_proposals')):
        with pytest.raises(ValueError, match=msg):
            BagSampler(**kwargs)
