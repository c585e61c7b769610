"""BARON's bag-of-regions sampler.

Each proposal that survives filtering becomes the centre cell (index 4) of a 3x3 grid of
same-size boxes::

    0 1 2
    3 4 5
    6 7 8

A *bag* (a "group" in the paper's code) is the centre plus a random subset of its eight
neighbours; its *spanned* box is the bounding box of its members. Each bag is turned into
``max_permutations`` word sequences by shuffling the order of its members.

The reference samples bags with a Python generator per proposal that redraws Bernoulli masks
until it has enough distinct ones (marked slow in its code, and unbounded when probabilities
are tiny). Drawing distinct masks one after another by rejection is sampling *without
replacement* from the distribution over the 2^8 neighbour subsets, which the Gumbel-top-k trick
does exactly and at once for every proposal: the k largest of ``log P(subset) + Gumbel`` are
distributed as k successive rejection draws. Distinct permutations are drawn the same way
through their lexicographic ranks. Only the loops over images, over the ``max_permutations``
draws and over the nine grid positions remain.
"""
import math

import torch
from torchvision.ops import nms

__all__ = ['BagSampler']

_CENTRE = 4
_NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)
_EPS = 1e-12
# Row i of _SUBSETS: which of the 8 neighbours subset i contains (bit k = neighbour k).
_SUBSETS = ((torch.arange(256)[:, None] >> torch.arange(8)[None]) & 1).bool()
_FACTORIALS = torch.tensor([math.factorial(i) for i in range(10)], dtype=torch.long)


class BagSampler:
    """Filter proposals and sample bags of neighbouring regions around each of them.

    Args:
        num_proposals: keep the top-k proposals by objectness before anything else.
        nms_thr: IoU threshold of the NMS among the kept proposals; a low value (0.1) spreads
            the bags over the image.
        shape_ratio_thr: keep boxes whose w/h lies in (thr, 1/thr); elongated proposals give
            degenerate neighbourhoods.
        area_ratio_thr: keep boxes whose area inside the image exceeds this fraction of the
            image area (image box [0, 0, w - 1, h - 1], as the reference).
        objectness_thr: keep proposals scoring above this (ignored when proposals carry no
            score column). When nothing passes the filters, the best-scored box with a
            positive area is kept alone, as in the reference.
        max_groups: bags per proposal (fewer when fewer distinct subsets are possible).
        max_permutations: word orders per bag (fewer when the bag has fewer members).
        alpha: exponent on the aspect ratio; a tall box gets left/right neighbours more often,
            a wide one up/down neighbours.
        cut_off_thr: a neighbour direction is dropped when less than this fraction of the
            neighbour would remain inside the image after clipping.
        base_probability: upper bound of the probability of each direction.
        interval: gap between neighbouring boxes relative to the box size (negative =
            overlap).
        use_gt: add ground-truth boxes (score 1) as extra centres; they go through the same
            filters and NMS.
    """

    def __init__(self,
                 num_proposals=300,
                 nms_thr=0.1,
                 shape_ratio_thr=0.25,
                 area_ratio_thr=0.01,
                 objectness_thr=0.85,
                 max_groups=3,
                 max_permutations=2,
                 alpha=3.0,
                 cut_off_thr=0.3,
                 base_probability=0.3,
                 interval=-0.1,
                 use_gt=False):
        if not (isinstance(num_proposals, int) and num_proposals > 0):
            raise ValueError(f'num_proposals must be a positive int, got {num_proposals!r}')
        if not 0.0 < shape_ratio_thr < 1.0:
            raise ValueError(f'shape_ratio_thr must lie in (0, 1), got {shape_ratio_thr}')
        if not 0.0 <= nms_thr <= 1.0:
            raise ValueError(f'nms_thr must lie in [0, 1], got {nms_thr}')
        if not (isinstance(max_groups, int) and 1 <= max_groups <= 256):
            raise ValueError(f'max_groups must be an int in [1, 256] (there are 256 '
                             f'neighbour subsets), got {max_groups!r}')
        if not (isinstance(max_permutations, int) and max_permutations >= 1):
            raise ValueError(f'max_permutations must be a positive int, got {max_permutations!r}')
        if not 0.0 <= base_probability <= 1.0:
            raise ValueError(f'base_probability must lie in [0, 1], got {base_probability}')
        if interval <= -1.0:
            raise ValueError(f'interval must be > -1 (neighbours would coincide with the '
                             f'centre), got {interval}')
        self.num_proposals = num_proposals
        self.nms_thr = float(nms_thr)
        self.shape_ratio_thr = float(shape_ratio_thr)
        self.area_ratio_thr = float(area_ratio_thr)
        self.objectness_thr = float(objectness_thr)
        self.max_groups = max_groups
        self.max_permutations = max_permutations
        self.alpha = float(alpha)
        self.cut_off_thr = float(cut_off_thr)
        self.base_probability = float(base_probability)
        self.interval = float(interval)
        self.use_gt = use_gt

    # ------------------------------------------------------------------ public entry point
    def sample(self, proposals, img_shapes, gt_bboxes=None, generator=None):
        """Sample bags for every image of a batch.

        Args:
            proposals: list of [n, 4] (xyxy) or [n, 5] (xyxy + objectness) tensors, in the
                coordinates of the (resized, unpadded) image.
            img_shapes: list of (h, w), one per image.
            gt_bboxes: list of [g, 4] tensors, used when ``use_gt`` is set.
            generator: a ``torch.Generator``; the same seed gives the same bags.

        Returns:
            One dict per image, see :meth:`build_bags`; an image without a usable proposal
            gets a dict of empty tensors.
        """
        if not isinstance(proposals, (list, tuple)):
            raise TypeError(f'proposals must be a list of tensors, got {type(proposals)}')
        if len(img_shapes) != len(proposals):
            raise ValueError(f'{len(proposals)} proposal tensors but {len(img_shapes)} '
                             f'image shapes')
        if gt_bboxes is not None and len(gt_bboxes) != len(proposals):
            raise ValueError(f'{len(proposals)} proposal tensors but {len(gt_bboxes)} '
                             f'gt_bboxes tensors')
        centres = [self.select_centres(props, img_shapes[i],
                                       gt_bboxes[i] if (self.use_gt and gt_bboxes is not None)
                                       else None)
                   for i, props in enumerate(proposals)]
        return self.sample_from_centres(centres, img_shapes, generator)

    def sample_from_centres(self, centres, img_shapes, generator=None):
        """Bags around given centres ([K, 4], or [K, 5] with scores, one tensor per image),
        e.g. :meth:`select_centres` output merged with a :class:`BoxesCache`."""
        results = []
        for boxes, shape in zip(centres, img_shapes):
            boxes = boxes[:, :4]
            draws = self.draw(boxes.shape[0], generator, boxes.device)
            results.append(self.build_bags(boxes, shape, draws))
        return results

    # ------------------------------------------------------------------ proposal filtering
    def select_centres(self, proposals, img_shape, gt_bboxes=None, return_scores=False):
        """Top-k, shape/area/objectness filters, then NMS -> [K, 4] centre boxes
        ([K, 5] with their scores when ``return_scores``; proposals without a score column
        count as 1, ground-truth boxes too)."""
        if not torch.is_tensor(proposals) or proposals.dim() != 2 \
                or proposals.shape[1] not in (4, 5):
            raise ValueError('each proposals entry must be a [n, 4] or [n, 5] tensor, got '
                             f'{getattr(proposals, "shape", type(proposals))}')
        h, w = _check_shape(img_shape)
        proposals = proposals.detach().float()
        boxes = proposals[:, :4]
        has_score = proposals.shape[1] == 5
        if has_score:
            scores = proposals[:, 4]
        else:  # already ranked: keep the given order and skip the objectness filter
            n = boxes.shape[0]
            scores = 1.0 - torch.arange(n, device=boxes.device, dtype=boxes.dtype) / max(n, 1)
        order = torch.sort(scores, descending=True, stable=True).indices[:self.num_proposals]
        boxes, scores = boxes[order], scores[order]
        if gt_bboxes is not None and gt_bboxes.numel() > 0:
            if gt_bboxes.dim() != 2 or gt_bboxes.shape[1] < 4:
                raise ValueError(f'gt_bboxes must be [g, 4], got {tuple(gt_bboxes.shape)}')
            gt = gt_bboxes[:, :4].detach().to(boxes)
            boxes = torch.cat([boxes, gt])
            scores = torch.cat([scores, scores.new_ones(gt.shape[0])])
        width = 5 if return_scores else 4
        # without a score column the rank order ranks (sort, NMS), but the reported score is 1
        reported = scores if has_score else torch.ones_like(scores)
        if boxes.shape[0] == 0:
            return boxes.new_zeros(0, width)

        def out(keep):
            kept = boxes[keep]
            return torch.cat([kept, reported[keep][:, None]], 1) if return_scores else kept

        wh = boxes[:, 2:] - boxes[:, :2]
        ratio = wh[:, 0] / (wh[:, 1] + _EPS)
        valid = (ratio > self.shape_ratio_thr) & (ratio < 1.0 / self.shape_ratio_thr)
        # the reference's intersection-over-foreground with the image box [0, 0, w-1, h-1]
        # (mmdet's bbox_overlaps, mode='iof')
        inter = ((boxes[:, 2].clamp(0, w - 1) - boxes[:, 0].clamp(0, w - 1)).clamp(min=0)
                 * (boxes[:, 3].clamp(0, h - 1) - boxes[:, 1].clamp(0, h - 1)).clamp(min=0))
        valid &= inter / max((h - 1) * (w - 1), _EPS) > self.area_ratio_thr
        if has_score:
            valid &= scores > self.objectness_thr
        if not valid.any():
            positive = (wh > 0).all(1)
            if not positive.any():
                return boxes.new_zeros(0, width)
            best = torch.where(positive, scores, scores.new_tensor(-math.inf)).argmax()
            return out(best[None])
        keep = valid.nonzero(as_tuple=True)[0]
        return out(keep[nms(boxes[keep], scores[keep], self.nms_thr)])

    # ------------------------------------------------------------------ random draws
    def draw(self, num_centres, generator=None, device=None):
        """All the randomness of :meth:`build_bags` for ``num_centres`` centres, drawn up front.

        Drawn on the generator's device and then moved, so a seed gives the same bags on any
        device. Returns ``group_u`` [K, 256] (uniforms turned into Gumbel noise) and
        ``perm_u`` [K, max_groups, max_permutations] (float64: ranks go up to 9!).
        """
        gen_device = generator.device if generator is not None else device
        group_u = torch.rand(num_centres, 256, generator=generator, device=gen_device)
        perm_u = torch.rand(num_centres, self.max_groups, self.max_permutations,
                            generator=generator, device=gen_device, dtype=torch.float64)
        return dict(group_u=group_u.to(device), perm_u=perm_u.to(device))

    # ------------------------------------------------------------------ bag construction
    def neighbour_probabilities(self, centres, img_shape):
        """[K, 9] probability of each grid cell joining a bag (1 for the centre)."""
        h, w = img_shape
        x1, y1, x2, y2 = centres.unbind(1)
        bw, bh = x2 - x1 + _EPS, y2 - y1 + _EPS
        base = self.base_probability
        p_lr = base * (bh / bw) ** self.alpha
        p_ud = base * (bw / bh) ** self.alpha
        lrud = torch.stack([p_lr, p_lr, p_ud, p_ud], 1)
        room = torch.stack([x1 / bw, (w - x2) / bw, y1 / bh, (h - y2) / bh], 1)
        lrud = torch.where(room > self.cut_off_thr + self.interval, lrud, 0.0)
        lrud = torch.nan_to_num(lrud.clamp(0.0, base), nan=0.0)
        one = torch.ones_like(p_lr)
        col = torch.stack([lrud[:, 0], one, lrud[:, 1]], 1)  # left, -, right
        row = torch.stack([lrud[:, 2], one, lrud[:, 3]], 1)  # up, -, down
        prob = row[:, :, None] * col[:, None, :]
        # a corner depends on two directions: the geometric mean keeps it on their scale
        corner = torch.zeros(3, 3, dtype=torch.bool, device=centres.device)
        corner[0::2, 0::2] = True
        prob = torch.where(corner, prob.clamp(min=0).sqrt(), prob)
        return prob.reshape(-1, 9).clamp(0.0, 1.0)

    def cell_boxes(self, centres, img_shape):
        """[K, 9, 4] grid boxes around each centre, clipped to the image."""
        h, w = img_shape
        wh = centres[:, 2:] - centres[:, :2]
        offsets = torch.arange(-1, 2, device=centres.device, dtype=centres.dtype)
        dx = offsets[None, None, :] * (1 + self.interval) * wh[:, 0, None, None]
        dy = offsets[None, :, None] * (1 + self.interval) * wh[:, 1, None, None]
        dx, dy = dx.expand(-1, 3, 3).reshape(-1, 9), dy.expand(-1, 3, 3).reshape(-1, 9)
        shift = torch.stack([dx, dy, dx, dy], -1)
        boxes = centres[:, None, :] + shift
        upper = centres.new_tensor([w, h, w, h])
        return torch.minimum(boxes.clamp(min=0), upper)

    def build_bags(self, centres, img_shape, draws):
        """Bags around ``centres`` [K, 4] from the random ``draws`` of :meth:`draw`.

        Returns a dict of tensors (M box entries = the members of every bag, bag-major, cells
        ascending; a region shared by several bags of a centre appears once per bag):

        - ``centres`` [K, 4] the proposals (and GT boxes) the bags are centred on
        - ``boxes`` [M, 4] clipped member boxes; ``cells`` [M] their grid cell
        - ``bag_ids`` [M] index into ``spanned``
        - ``box_pos`` [M, 4] (cx, cy, w, h) of the box relative to its bag's spanned box
        - ``regions`` [R, 4] distinct (centre, cell) boxes; ``region_index`` [M] into it, so
          the RoI head runs once per region, not once per bag
        - ``spanned`` [G, 4] spanned box of each bag; ``bag_centre`` [G] index into centres
        - ``sequences`` [S, 9] box-entry indices in word order (-1 padded), one row per
          permutation; ``seq_bag`` [S] index into ``spanned``
        """
        h, w = _check_shape(img_shape)
        device, dtype = centres.device, centres.dtype
        k = centres.shape[0]
        group_u, perm_u = draws['group_u'], draws['perm_u']
        if group_u.shape != (k, 256) or perm_u.shape != (k, self.max_groups,
                                                         self.max_permutations):
            raise ValueError(f'draws do not match {k} centres: group_u {tuple(group_u.shape)}, '
                             f'perm_u {tuple(perm_u.shape)}')
        cell_prob = self.neighbour_probabilities(centres, (h, w))
        cell_box = self.cell_boxes(centres, (h, w))

        # --- bags: Gumbel-top-k over the 256 neighbour subsets (= sequential rejection draws)
        subsets = _SUBSETS.to(device)
        inside, outside = subsets.to(dtype), (~subsets).to(dtype)
        q = cell_prob[:, list(_NEIGHBOURS)]
        # log P(subset) as two [K, 8] x [8, 256] products; log 0 is floored at -1e4 (far below
        # any possible subset, and no 0 * inf) and impossible subsets are counted apart
        log_p = (q.log().clamp(min=-1e4) @ inside.t()
                 + torch.log1p(-q).clamp(min=-1e4) @ outside.t())
        impossible = ((q == 0).to(dtype) @ inside.t() + (q == 1).to(dtype) @ outside.t()) > 0
        gumbel = -torch.log(-torch.log(group_u.clamp(1e-12, 1 - 1e-7)))
        top = (log_p + gumbel).topk(self.max_groups, dim=1).indices  # [K, max_groups]
        num_valid = (q > 0).sum(1)
        num_groups = torch.minimum(_FACTORIALS.to(device)[num_valid].clamp(max=self.max_groups),
                                   (~impossible).sum(1))
        group_ok = torch.arange(self.max_groups, device=device)[None] < num_groups[:, None]
        bag_centre, slot = group_ok.nonzero(as_tuple=True)  # [G], centre-major
        member = torch.ones(bag_centre.shape[0], 9, dtype=torch.bool, device=device)
        member[:, list(_NEIGHBOURS)] = subsets[top[bag_centre, slot]]

        # --- spanned boxes and positions of members within them
        boxes_g = cell_box[bag_centre]  # [G, 9, 4]
        inf = torch.tensor(math.inf, device=device, dtype=dtype)
        lo = torch.where(member[..., None], boxes_g[..., :2], inf).amin(1)
        hi = torch.where(member[..., None], boxes_g[..., 2:], -inf).amax(1)
        spanned = torch.cat([lo, hi], 1).reshape(-1, 4)
        bag_ids, cells = member.nonzero(as_tuple=True)  # [M]
        boxes = boxes_g[bag_ids, cells]
        span = spanned[bag_ids]
        size = span[:, 2:] - span[:, :2] + _EPS
        normed = (boxes.reshape(-1, 2, 2) - span[:, None, :2]) / size[:, None, :]
        normed = normed.reshape(-1, 4)
        box_pos = torch.cat([(normed[:, :2] + normed[:, 2:]) / 2, normed[:, 2:] - normed[:, :2]],
                            1)
        region_key = bag_centre[bag_ids] * 9 + cells
        region_key, region_index = torch.unique(region_key, sorted=True, return_inverse=True)
        regions = cell_box.reshape(-1, 4)[region_key]

        # --- word orders: distinct random permutations of each bag's members
        n_members = member.sum(1)
        ranks, rank_ok = _distinct_ranks(_FACTORIALS.to(device)[n_members],
                                         perm_u[bag_centre, slot])
        seq_bag, perm_slot = rank_ok.nonzero(as_tuple=True)  # [S], bag-major
        order = _unrank(n_members[seq_bag], ranks[seq_bag, perm_slot])  # member positions
        first_entry = n_members.cumsum(0) - n_members
        sequences = torch.where(order >= 0, order + first_entry[seq_bag, None], -1)

        return dict(centres=centres, boxes=boxes, cells=cells, bag_ids=bag_ids,
                    box_pos=box_pos, regions=regions, region_index=region_index,
                    spanned=spanned, bag_centre=bag_centre, sequences=sequences,
                    seq_bag=seq_bag)


def _check_shape(img_shape):
    if len(img_shape) < 2:
        raise ValueError(f'img_shape must be (h, w), got {img_shape!r}')
    h, w = float(img_shape[0]), float(img_shape[1])
    if h <= 0 or w <= 0:
        raise ValueError(f'img_shape must be positive, got {img_shape!r}')
    return h, w


def _distinct_ranks(num_perms, u):
    """Distinct uniform ranks in [0, num_perms) for each row, without replacement.

    Draw j picks uniformly among the num_perms - j unused ranks: it draws r in
    [0, num_perms - j) and steps over every earlier rank <= r (visited in ascending order).
    Returns ranks [N, P] and a mask of the draws that exist (j < num_perms).
    """
    num_draws = u.shape[1]
    chosen = []
    for j in range(num_draws):
        left = (num_perms - j).clamp(min=1)
        r = torch.minimum((u[:, j] * left.double()).floor().long(), left - 1)
        if chosen:
            for prev in torch.stack(chosen, 1).sort(1).values.unbind(1):
                r = r + (r >= prev).long()
        chosen.append(r)
    ranks = torch.stack(chosen, 1) if chosen else num_perms.new_zeros(num_perms.shape[0], 0)
    ok = torch.arange(num_draws, device=u.device)[None] < num_perms[:, None]
    return ranks, ok


def _unrank(n, rank):
    """Permutation of range(n) with lexicographic index ``rank`` -> [N, 9], -1 padded."""
    facts = _FACTORIALS.to(n.device)
    avail = torch.arange(9, device=n.device)[None] < n[:, None]
    out = torch.full((n.shape[0], 9), -1, dtype=torch.long, device=n.device)
    rest = rank.clone()
    for i in range(9):
        left = n - i
        active = left > 0
        f = facts[(left - 1).clamp(min=0)]
        digit = rest // f
        rest = rest % f
        hit = avail & (avail.long().cumsum(1) == (digit + 1)[:, None])
        pick = hit.long().argmax(1)
        out[:, i] = torch.where(active, pick, -1)
        avail[active, pick[active]] = False
    return out
