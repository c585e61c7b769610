"""VCTree's trees: a maximum spanning tree of the pair scores, its binary form, and binary
TreeLSTMs run both ways (SGB ``utils_vctree.py`` and ``utils_treelstm.py``).

Neither torch nor mmcv has tree LSTMs, so they are written here. SGB walks every tree
recursively, one node at a time; here all trees of a batch are one forest and the nodes of
equal height (leaves-to-root pass) or equal depth (root-to-leaves pass) are computed in one
batched step, which gives the same numbers.

- :func:`max_spanning_tree`: Prim's algorithm from the node with the highest mean score,
  always attaching the remaining node with the highest score to an already chosen node
  (SGB ``generate_forest`` / ``gen_tree``).
- :func:`to_binary_forest`: left-child right-sibling form (SGB ``arbForest_to_biForest``):
  the first child becomes the left child, each further child the right child of the one
  before it.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def max_spanning_tree(scores: np.ndarray) -> Tuple[int, List[List[int]]]:
    """Spanning tree of ``n`` nodes grown greedily from the best node (Prim).

    Args:
        scores: [n, n] pair scores; ``scores[p, c]`` is the score of attaching ``c`` under ``p``.

    Returns:
        tuple: the root index and, per node, its children in the order they were attached.
    """
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if scores.shape != (n, n) or n == 0:
        raise ValueError(f'max_spanning_tree needs a non-empty square score matrix, got '
                         f'{scores.shape}')
    root = int(np.argmax(scores.mean(1)))
    children: List[List[int]] = [[] for _ in range(n)]
    chosen = [root]
    remaining = [i for i in range(n) if i != root]
    while remaining:
        block = scores[np.ix_(chosen, remaining)]
        best = int(np.argmax(block))                  # first maximum, row-major as SGB
        parent, child = chosen[best // len(remaining)], remaining[best % len(remaining)]
        children[parent].append(child)
        chosen.append(child)
        remaining.remove(child)
    return root, children


class BinaryForest(NamedTuple):
    """Binary trees of all images of a batch over the batch-global node indices.

    Attributes:
        left: LongTensor [N] left child, -1 for none.
        right: LongTensor [N] right child, -1 for none.
        parent: LongTensor [N] binary parent, -1 for a root.
        image: LongTensor [N] image of each node.
        up_levels: node groups of equal height, leaves first (leaves-to-root order).
        down_levels: node groups of equal depth, roots first (root-to-leaves order).
    """
    left: Tensor
    right: Tensor
    parent: Tensor
    image: Tensor
    up_levels: List[Tensor]
    down_levels: List[Tensor]

    @property
    def num_nodes(self) -> int:
        return self.left.numel()


def to_binary_forest(trees: Sequence[Tuple[int, List[List[int]]]],
                     device: Optional[torch.device] = None) -> BinaryForest:
    """Left-child right-sibling binary trees of a batch of trees.

    Args:
        trees: per image ``(root, children)`` as :func:`max_spanning_tree` returns, with
            image-local indices.
        device: device of the index tensors.
    """
    sizes = [len(children) for _, children in trees]
    total = sum(sizes)
    left = np.full(total, -1, dtype=np.int64)
    right = np.full(total, -1, dtype=np.int64)
    parent = np.full(total, -1, dtype=np.int64)
    image = np.repeat(np.arange(len(sizes)), sizes)
    depth = np.zeros(total, dtype=np.int64)
    roots = []
    offset = 0
    for (root, children), n in zip(trees, sizes):
        roots.append(root + offset)
        for p, kids in enumerate(children):
            prev = p + offset
            for k, c in enumerate(kids):
                c += offset
                if k == 0:
                    left[prev] = c
                else:
                    right[prev] = c
                parent[c] = prev
                prev = c
        offset += n
    # depths from the roots down, heights from the leaves up (the binary tree is acyclic)
    order = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        for c in (left[node], right[node]):
            if c >= 0:
                depth[c] = depth[node] + 1
                stack.append(c)
    if len(order) != total:
        raise ValueError('to_binary_forest: the trees do not span their nodes')
    height = np.zeros(total, dtype=np.int64)
    for node in reversed(order):
        kids = [height[c] + 1 for c in (left[node], right[node]) if c >= 0]
        height[node] = max(kids) if kids else 0

    def groups(key):
        return [torch.as_tensor(np.flatnonzero(key == v), device=device)
                for v in range(int(key.max()) + 1)] if total else []

    def as_t(a):
        return torch.as_tensor(a, device=device)

    return BinaryForest(as_t(left), as_t(right), as_t(parent), as_t(image), groups(height),
                        groups(depth))


def block_orthogonal_(weight: Tensor, block: Sequence[int], gain: float = 1.0) -> None:
    """Orthogonal initialisation of each ``block``-sized block of ``weight`` (SGB / AllenNLP
    ``block_orthogonal``)."""
    rows, cols = weight.shape
    if rows % block[0] or cols % block[1]:
        raise ValueError(f'weight {tuple(weight.shape)} does not split into {tuple(block)} '
                         'blocks')
    with torch.no_grad():
        for r in range(0, rows, block[0]):
            for c in range(0, cols, block[1]):
                size = max(block)
                tmp = weight.new_empty(size, size)
                nn.init.orthogonal_(tmp, gain=gain)
                weight[r:r + block[0], c:c + block[1]] = tmp[:block[0], :block[1]]


def dropout_masks(p: float, num_images: int, dim: int, device) -> Optional[Tensor]:
    """One inverted-dropout mask per image (SGB ``get_dropout_mask``, one per tree)."""
    if p <= 0:
        return None
    return (torch.rand(num_images, dim, device=device) > p).float() / (1.0 - p)


def _gather(states: Tensor, index: Tensor) -> Tensor:
    """Rows ``index`` of ``states`` whose last row is the zero state (index -1)."""
    return states[torch.where(index >= 0, index, states.shape[0] - 1)]


class TreeLSTMUp(nn.Module):
    """Binary TreeLSTM from the leaves to the root (SGB ``BiTreeLSTM_Foreward``): a node reads
    its input and the states of its left and right children, with a highway to the input.

    Args:
        in_dim: input size.
        h_dim: state size.
    """

    def __init__(self, in_dim: int, h_dim: int):
        super().__init__()
        self.h_dim = h_dim
        self.px = nn.Linear(in_dim, h_dim)
        self.ioffux = nn.Linear(in_dim, 6 * h_dim)
        self.ioffuh_left = nn.Linear(h_dim, 6 * h_dim)
        self.ioffuh_right = nn.Linear(h_dim, 6 * h_dim)
        for lin, block in ((self.px, (h_dim, in_dim)), (self.ioffux, (h_dim, in_dim)),
                           (self.ioffuh_left, (h_dim, h_dim)),
                           (self.ioffuh_right, (h_dim, h_dim))):
            block_orthogonal_(lin.weight, block)
            nn.init.zeros_(lin.bias)
        with torch.no_grad():    # forget gates start half open (SGB)
            self.ioffuh_left.bias[2 * h_dim:4 * h_dim].fill_(0.5)
            self.ioffuh_right.bias[2 * h_dim:4 * h_dim].fill_(0.5)

    def forward(self, forest: BinaryForest, feats: Tensor,
                masks: Optional[Tensor] = None) -> Tensor:
        n = forest.num_nodes
        c_all = feats.new_zeros(n + 1, self.h_dim)      # last row: the empty child
        h_all = feats.new_zeros(n + 1, self.h_dim)
        for idx in forest.up_levels:
            lc, lh = _gather(c_all, forest.left[idx]), _gather(h_all, forest.left[idx])
            rc, rh = _gather(c_all, forest.right[idx]), _gather(h_all, forest.right[idx])
            x = feats[idx]
            gates = self.ioffux(x) + self.ioffuh_left(lh) + self.ioffuh_right(rh)
            i, o, f_l, f_r, u, r = gates.chunk(6, dim=1)
            c = (torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f_l) * lc
                 + torch.sigmoid(f_r) * rc)
            h = torch.sigmoid(o) * torch.tanh(c)
            r = torch.sigmoid(r)
            h = r * h + (1 - r) * self.px(x)
            if masks is not None and self.training:
                h = h * masks[forest.image[idx]]
            c_all = c_all.index_copy(0, idx, c)
            h_all = h_all.index_copy(0, idx, h)
        return h_all[:n]


class TreeLSTMDown(nn.Module):
    """Binary TreeLSTM from the root to the leaves (SGB ``BiTreeLSTM_Backward``): a node reads
    its input and its binary parent's state.

    Args:
        in_dim: input size.
        h_dim: state size.
    """

    def __init__(self, in_dim: int, h_dim: int):
        super().__init__()
        self.h_dim = h_dim
        self.px = nn.Linear(in_dim, h_dim)
        self.iofux = nn.Linear(in_dim, 5 * h_dim)
        self.iofuh = nn.Linear(h_dim, 5 * h_dim)
        for lin, block in ((self.px, (h_dim, in_dim)), (self.iofux, (h_dim, in_dim)),
                           (self.iofuh, (h_dim, h_dim))):
            block_orthogonal_(lin.weight, block)
            nn.init.zeros_(lin.bias)
        with torch.no_grad():
            self.iofuh.bias[2 * h_dim:3 * h_dim].fill_(1.0)

    def cell(self, x: Tensor, pc: Tensor, ph: Tensor) -> Tuple[Tensor, Tensor]:
        gates = self.iofux(x) + self.iofuh(ph)
        i, o, f, u, r = gates.chunk(5, dim=1)
        c = torch.sigmoid(i) * torch.tanh(u) + torch.sigmoid(f) * pc
        h = torch.sigmoid(o) * torch.tanh(c)
        r = torch.sigmoid(r)
        return c, r * h + (1 - r) * self.px(x)

    def forward(self, forest: BinaryForest, feats: Tensor,
                masks: Optional[Tensor] = None) -> Tensor:
        n = forest.num_nodes
        c_all = feats.new_zeros(n + 1, self.h_dim)
        h_all = feats.new_zeros(n + 1, self.h_dim)
        for idx in forest.down_levels:
            par = forest.parent[idx]
            c, h = self.cell(feats[idx], _gather(c_all, par), _gather(h_all, par))
            if masks is not None and self.training:
                h = h * masks[forest.image[idx]]
            c_all = c_all.index_copy(0, idx, c)
            h_all = h_all.index_copy(0, idx, h)
        return h_all[:n]


class BiTreeLSTM(nn.Module):
    """Several layers of both TreeLSTMs, their states concatenated (SGB
    ``MultiLayer_BTreeLSTM``); each direction has ``out_dim // 2`` units.

    Args:
        in_dim: input size.
        out_dim: output size (even).
        num_layers: layers.
        dropout: per-tree dropout on every state (training only).
    """

    def __init__(self, in_dim: int, out_dim: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        if out_dim % 2:
            raise ValueError(f'BiTreeLSTM out_dim must be even, got {out_dim}')
        self.dropout = dropout
        self.half = out_dim // 2
        self.up = nn.ModuleList()
        self.down = nn.ModuleList()
        for k in range(num_layers):
            d = in_dim if k == 0 else out_dim
            self.up.append(TreeLSTMUp(d, self.half))
            self.down.append(TreeLSTMDown(d, self.half))

    def forward(self, forest: BinaryForest, feats: Tensor) -> Tensor:
        num_images = int(forest.image.max()) + 1 if forest.num_nodes else 0
        for up, down in zip(self.up, self.down):
            m_up = dropout_masks(self.dropout if self.training else 0, num_images, self.half,
                                 feats.device)
            m_down = dropout_masks(self.dropout if self.training else 0, num_images,
                                   self.half, feats.device)
            feats = torch.cat([up(forest, feats, m_up), down(forest, feats, m_down)], dim=1)
        return feats


class TreeLSTMDecoder(nn.Module):
    """Object labels decoded from the root down (SGB ``DecoderTreeLSTM``, backward): each node
    reads its input and the embedding of its binary parent's label ('start' at a root).

    Training feeds a label sampled from the node's predicted distribution (as SGB), testing the
    best foreground class; the returned commitments are always the best foreground class.

    Args:
        num_obj_cls: C+1.
        embed_dim: label embedding size.
        in_dim: per-node input size.
        h_dim: state size.
        dropout: per-tree dropout on the states (training only).
    """

    def __init__(self, num_obj_cls: int, embed_dim: int, in_dim: int, h_dim: int,
                 dropout: float = 0.0):
        super().__init__()
        self.num_obj_cls = num_obj_cls
        self.dropout = dropout
        # row 0 = 'start', row l + 1 = label l
        self.obj_embed = nn.Embedding(num_obj_cls + 1, embed_dim)
        self.out = nn.Linear(h_dim, num_obj_cls)
        self.lstm = TreeLSTMDown(in_dim + embed_dim, h_dim)

    def forward(self, forest: BinaryForest, feats: Tensor) -> Tuple[Tensor, Tensor]:
        """Returns logits [N, C+1] and committed labels [N] in node order."""
        n = forest.num_nodes
        lstm = self.lstm
        num_images = int(forest.image.max()) + 1 if n else 0
        masks = dropout_masks(self.dropout if self.training else 0, num_images, lstm.h_dim,
                              feats.device)
        c_all = feats.new_zeros(n + 1, lstm.h_dim)
        h_all = feats.new_zeros(n + 1, lstm.h_dim)
        fed = torch.zeros(n + 1, dtype=torch.long, device=feats.device)  # last: 'start' (-1)
        fed[n] = -1
        dists = feats.new_zeros(n, self.num_obj_cls)
        commits = torch.zeros(n, dtype=torch.long, device=feats.device)
        for idx in forest.down_levels:
            par = forest.parent[idx]
            prev = fed[torch.where(par >= 0, par, n)]
            x = torch.cat([feats[idx], self.obj_embed(prev + 1)], dim=1)
            c, h = lstm.cell(x, _gather(c_all, par), _gather(h_all, par))
            if masks is not None and self.training:
                h = h * masks[forest.image[idx]]
            c_all = c_all.index_copy(0, idx, c)
            h_all = h_all.index_copy(0, idx, h)
            dist = self.out(h)
            best = dist[:, 1:].argmax(1) + 1
            if self.training:
                label = F.softmax(dist.detach(), dim=1)[:, 1:].multinomial(1)[:, 0] + 1
            else:
                label = best
            dists = dists.index_copy(0, idx, dist)
            commits[idx] = best
            fed[idx] = label
        return dists, commits
