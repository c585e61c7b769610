"""Time BARON's RoI-head training step: ovkit's shipped code vs the reference's code path.

One step, forward and backward, of everything BARON adds to the RoI head of a two-stage
detector, for the same inputs (FPN features, proposals, images, sampled RoIs and labels):

* region classification: RoI features of the sampled RoIs -> box head -> pseudo words (word
  dropout) -> CLIP text encoder (output of block ``--text-layer``, "attn12") -> temperature x
  cosine logits with a learned background -> cross-entropy (novel classes weight 0,
  background 0.7);
* bag alignment (the whole BARON KD step): bag sampling around the proposals, RoI features and
  pseudo words of the bag regions, box position embeddings, CLIP text encoder on the bag
  sentences (projected output plus MaskCLIP word tokens), the CLIP image teacher on the
  spanned boxes (global and MaskCLIP patch features), the bag and single-region InfoNCE losses
  with full queues of earlier features.

"ovkit" calls the library: ``BaronRoIHead._bbox_forward`` + ``BaronBBoxHead.loss`` for the
regions and ``BaronKD.forward`` (``BagSampler``, ``CLIPModel``) for the bags. "reference" is a
rendering of the code path of BARON's reference implementation (wusize/ovdet,
``ovdet/methods/baron/*``, ``ovdet/models/vlms/clip/*``): neighbourhood sampling per image and
per proposal over numpy arrays and nested Python lists with ``multi_apply``; RoI features for
every box of every word order; pseudo texts padded to the longest sentence + 2 tokens, one
Python call per sentence, through ``nn.MultiheadAttention`` residual blocks in LND layout with
an explicit causal mask (as OpenAI CLIP's); teacher crops per image, repeated once per word
order; word and patch features gathered per box in Python. Both use the same weights, the same
bags and the same dropout masks (the reference's random choices replay ovkit's draws, so the
numbers can be compared: its own rejection sampling would only add time), and the script
fails unless both compute the same losses and gradients.

Two deliberate departures from the reference, both in its favour or neutral: its bag ids are
compared as float32 (ids of 9-member bags exceed 2^24 and can collide); here they are float64.
Ground-truth boxes are not added to the bag centres (ties at score 1 would order differently
in the two NMS implementations).

    python tools/analysis/benchmark_baron.py                       # CPU sizes, ~ minutes
    python tools/analysis/benchmark_baron.py --device cuda         # ViT-B/32, 2 x 512 RoIs
    python tools/analysis/benchmark_baron.py --quick               # tiny smoke run (tests)

Importable (``from tools.analysis.benchmark_baron import main``): ``main(argv)`` returns the
median times, both sides' losses and the largest relative difference of the check.
"""
import argparse
import gc
import json
import math
import os
import os.path as osp
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

_WORKER_TAG = 'BENCHMARK_BARON_MEMORY '
# defaults per mode: CLIP, batch, proposals, image shape, box head layout and widths
_SIZES = dict(
    cuda=dict(model='ViT-B-32', images=2, rois=512, proposals=300, img_shape=(800, 1333),
              head='shared4conv1fc', channels=256, fc_channels=1024),
    cpu=dict(model='ViT-B-32', images=2, rois=64, proposals=100, img_shape=(512, 683),
             head='shared2fc', channels=256, fc_channels=1024),
    quick=dict(model='tiny', images=2, rois=16, proposals=30, img_shape=(96, 128),
               head='shared2fc', channels=16, fc_channels=64),
)


# ---------------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time BARON's RoI-head training step (regions + bags, forward + backward): "
                    "ovkit vs the reference's code path; prints the ratio and peak memory.")
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (or 'cuda:N')")
    p.add_argument('--quick', action='store_true',
                   help='tiny sizes, one timed step, no memory measurement (for tests)')
    p.add_argument('--model', default=None,
                   help="open_clip architecture with random weights, or 'tiny' (default: "
                        'ViT-B-32; tiny with --quick)')
    p.add_argument('--images', type=int, default=None, help='images per batch')
    p.add_argument('--rois', type=int, default=None, help='sampled RoIs per image')
    p.add_argument('--proposals', type=int, default=None, help='RPN proposals per image')
    p.add_argument('--img-shape', type=int, nargs=2, default=None, metavar=('H', 'W'))
    p.add_argument('--head', choices=('shared4conv1fc', 'shared2fc'), default=None,
                   help='box head layout (BARON: shared4conv1fc; shared2fc is lighter)')
    p.add_argument('--channels', type=int, default=None, help='FPN channels (256)')
    p.add_argument('--fc-channels', type=int, default=None, help='box head fc width (1024)')
    p.add_argument('--num-words', type=int, default=6)
    p.add_argument('--num-classes', type=int, default=65)
    p.add_argument('--text-layer', type=int, default=None,
                   help='text block whose output classifies regions (default: the last, '
                        'i.e. "attn12" for ViT-B-32)')
    p.add_argument('--warmup', type=int, default=1, help='untimed steps of each side')
    p.add_argument('--repeats', type=int, default=None, help='timed steps per side (median)')
    p.add_argument('--check-tol', type=float, default=2e-3,
                   help='relative tolerance of the equivalence check (losses; gradients in L2 '
                        'norm)')
    p.add_argument('--print-diff', action='store_true', help='print the check differences')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory measurement')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--memory-worker', choices=('ovkit', 'reference'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        p.error(f"--device '{args.device}' is not a torch device; use 'cpu' or 'cuda'")
    if args.device.type not in ('cpu', 'cuda'):
        p.error(f"--device must be 'cpu' or 'cuda', got '{args.device}'")
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        p.error('--device cuda: no CUDA device is available (torch.cuda.is_available() is False)')
    sizes = _SIZES['quick' if args.quick else args.device.type]
    for key, value in sizes.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.quick:
        args.no_memory, args.warmup = True, 0
    for name in ('images', 'rois', 'proposals', 'num_words', 'num_classes', 'repeats',
                 'channels', 'fc_channels'):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f'--warmup must be >= 0, got {args.warmup}')
    if min(args.img_shape) < 32:
        p.error(f'--img-shape must be at least 32 x 32 pixels, got {tuple(args.img_shape)}')
    if not args.check_tol > 0:
        p.error(f'--check-tol must be > 0, got {args.check_tol}')
    return args


# ---------------------------------------------------------------------------------- set-up
def build(args, workdir):
    """Random CLIP, the real BaronRoIHead (extractor, box head, BaronKD) and the inputs."""
    import mmdet.models  # noqa: F401
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    import ovkit.baron  # noqa: F401
    from ovkit.clip import CLIPModel
    from ovkit.clip.builder import _create_architecture

    torch.manual_seed(args.seed)
    try:
        clip = CLIPModel(_create_architecture(args.model, True, args.seed),
                         model_name=args.model)
    except ValueError as err:
        raise SystemExit(f'--model: {err}') from None
    layer = clip.num_text_layers if args.text_layer is None else args.text_layer
    if not 1 <= layer <= clip.num_text_layers:
        raise SystemExit(f'--text-layer {layer}: CLIP {args.model} has '
                         f'{clip.num_text_layers} text blocks')
    args.text_layer = layer
    width, embed = clip.text_width, clip.embed_dim
    gen = torch.Generator().manual_seed(args.seed + 1)
    emb_path = osp.join(workdir, 'cls_attn.npy')  # 'attn': layer-k space, no name warning
    np.save(emb_path, torch.randn(args.num_classes, width, generator=gen).numpy())
    novel = list(range(0, args.num_classes, 4))  # every 4th class novel (weight 0)
    class_weight = [0.0 if i in novel else 1.0 for i in range(args.num_classes)] + [0.7]
    channels = args.channels
    head = dict(type='BaronShared4Conv1FCBBoxHead' if args.head == 'shared4conv1fc'
                else 'BaronShared2FCBBoxHead', in_channels=channels,
                fc_out_channels=args.fc_channels, conv_out_channels=channels,
                roi_feat_size=7, num_classes=args.num_classes, num_words=args.num_words,
                word_dim=width, cls_embeddings_path=emb_path, text_layer=layer,
                bg_embedding='learn', cls_temp=50.0, words_drop_ratio=0.5,
                class_weight=class_weight, reg_class_agnostic=True,
                loss_bbox=dict(type='L1Loss', loss_weight=1.0))
    if args.head == 'shared4conv1fc':
        head.update(norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True)
    cfg = dict(
        type='BaronRoIHead',
        bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                roi_layer=dict(type='RoIAlign', output_size=7,
                                               sampling_ratio=0),
                                out_channels=channels, featmap_strides=[4, 8, 16, 32]),
        bbox_head=head,
        kd=dict(type='BaronKD', num_words=args.num_words, word_dim=width, embed_dim=embed,
                bag_temp=30.0, bag_weight=1.0, single_temp=50.0, single_weight=0.1,
                queue_length=1024, word_drop_ratio=0.5,
                sampler=dict(num_proposals=300, nms_thr=0.1, objectness_thr=0.85,
                             max_groups=3, max_permutations=2, use_gt=False)))
    with DefaultScope.overwrite_default_scope('mmdet'):
        roi_head = MODELS.build(cfg)
    roi_head.set_clip(clip)
    dev = args.device
    clip.to(dev)
    roi_head.to(dev).train()
    return clip, roi_head, make_inputs(args, clip, roi_head, gen)


def make_proposals(num, img_shape, gen):
    """``num`` boxes [num, 5] that pass the sampler's filters often: sqrt(area) 1/16..1/2 of
    the image, aspect 1:2..2:1, objectness 0.86..1 (sorted)."""
    h, w = img_shape
    side = min(h, w)
    size = torch.empty(num).uniform_(math.log(side / 16), math.log(side / 2),
                                     generator=gen).exp()
    aspect = torch.empty(num).uniform_(math.log(0.5), math.log(2.0), generator=gen).exp()
    bw, bh = size * aspect.sqrt(), size / aspect.sqrt()
    cx, cy = torch.rand(num, generator=gen) * w, torch.rand(num, generator=gen) * h
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    boxes = torch.minimum(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=boxes.dtype))
    scores = (0.86 + 0.14 * torch.rand(num, generator=gen)).sort(descending=True).values
    return torch.cat([boxes, scores[:, None]], 1)


def make_inputs(args, clip, roi_head, gen):
    dev = args.device
    n, (h, w) = args.images, args.img_shape
    feats = tuple(torch.randn(n, args.channels, math.ceil(h / s), math.ceil(w / s),
                              generator=gen)
                  .to(dev).requires_grad_() for s in (4, 8, 16, 32))
    images = torch.randn(n, 3, h, w, generator=gen).to(dev)
    proposals = [make_proposals(args.proposals, (h, w), gen).to(dev) for _ in range(n)]
    rois = []
    for i, props in enumerate(proposals):
        pick = torch.randint(len(props), (args.rois,), generator=gen).to(dev)
        jitter = torch.randn(args.rois, 4, generator=gen).to(dev) * 4
        boxes = props[pick, :4] + jitter
        boxes = torch.cat([boxes[:, :2].clamp(min=0), boxes[:, 2:]], 1)
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 2)
        rois.append(torch.cat([boxes.new_full((args.rois, 1), i), boxes], 1))
    rois = torch.cat(rois)
    novel = (roi_head.bbox_head.class_weight[:-1] == 0).nonzero().flatten().cpu()
    base = torch.tensor([c for c in range(args.num_classes) if c not in set(novel.tolist())])
    labels = base[torch.randint(len(base), (len(rois),), generator=gen)]
    labels = torch.where(torch.rand(len(rois), generator=gen) < 0.25, labels,
                         args.num_classes).to(dev)
    metas = [dict(img_shape=(h, w), img_id=i) for i in range(n)]
    q = roi_head.kd.queues['bag_text']
    queues = {k: (F.normalize(torch.randn(q.length, q.dim, generator=gen), dim=-1).to(dev),
                  torch.randint(n, n + 50, (q.length,), generator=gen).to(dev))
              for k in roi_head.kd.QUEUES}
    mean = torch.tensor([123.675, 116.28, 103.53], device=dev)
    std = torch.tensor([58.395, 57.12, 57.375], device=dev)
    return dict(feats=feats, images=images, proposals=proposals, rois=rois, labels=labels,
                metas=metas, queues=queues, mean=mean, std=std, seed=args.seed + 7)


def reset_queues(roi_head, inputs):
    """Both sides start every step from the same full queues (a steady-state step)."""
    for name, (feats, ids) in inputs['queues'].items():
        queue = roi_head.kd.queues[name]
        queue.feats.copy_(feats)
        queue.ids.copy_(ids)


# ---------------------------------------------------------------------------------- ovkit
def step_ovkit(clip, roi_head, inputs, replay):
    """The library's code: what BaronRoIHead.loss adds to StandardRoIHead, and BaronKD."""
    head = roi_head.bbox_head
    torch.manual_seed(inputs['seed'])  # the region word dropout (BaronBBoxHead)
    res = roi_head._bbox_forward(inputs['feats'], inputs['rois'])
    labels = inputs['labels']
    loss_cls = head.loss(res['cls_score'], None, inputs['rois'], labels,
                         torch.ones_like(labels, dtype=torch.float32), None, None)['loss_cls']
    gen = torch.Generator(device=inputs['images'].device).manual_seed(inputs['seed'])
    kd = roi_head.kd(inputs['feats'], inputs['proposals'], inputs['images'], inputs['metas'],
                     inputs['mean'], inputs['std'], clip, roi_head.boxes_to_words,
                     generator=gen)
    return dict(loss_cls=loss_cls, loss_bag=kd['loss_bag'], loss_single=kd['loss_single'])


def draw_replay(clip, roi_head, inputs):
    """ovkit's random choices of one step (same seeds as :func:`step_ovkit`), for the
    reference to replay: region word masks, bags, word orders and bag word masks."""
    from ovkit.baron.kd import _collate
    head, kd = roi_head.bbox_head, roi_head.kd
    torch.manual_seed(inputs['seed'])
    words = torch.empty(len(inputs['rois']), head.num_words, 0,
                        device=inputs['rois'].device)
    region_keep = head.words_valid_mask(words)
    gen = torch.Generator(device=inputs['images'].device).manual_seed(inputs['seed'])
    shapes = [m['img_shape'] for m in inputs['metas']]
    samples = kd.sampler.sample(inputs['proposals'], shapes, None, gen)
    batch = _collate(samples, [m['img_id'] for m in inputs['metas']], inputs['images'].device)
    seq = batch['sequences']
    length = int((seq >= 0).sum(1).max())
    keep = kd._word_keep_mask(seq.shape[0] * length, seq.device, gen).view(
        seq.shape[0], length, -1)
    return dict(region_keep=region_keep, samples=samples, bag_keep=keep)


# ---------------------------------------------------------------------------------- reference
def _reference_sampler(sampler):
    """The reference's NeighborhoodSampling (numpy, one proposal at a time), whose random group
    and permutation choices are replayed from ovkit's draws."""
    import random  # noqa: F401  (the reference draws with random.sample; replayed here)

    from mmdet.models.utils import multi_apply

    interval = sampler.interval
    templates = []
    for i in range(3):
        h_interval = (float(i) - 1.0) * interval
        for j in range(3):
            w_interval = (float(j) - 1.0) * interval
            templates.append([float(j) + w_interval, float(i) + h_interval,
                              float(j + 1) + w_interval, float(i + 1) + h_interval])
    templates = np.array(templates, dtype=np.float32)

    def clamp(points, image_size):
        points[:, 0] = np.clip(points[:, 0], a_min=0, a_max=image_size[1])
        points[:, 1] = np.clip(points[:, 1], a_min=0, a_max=image_size[0])
        return points

    def lrud_possibility(box, image_size):
        img_h, img_w = image_size
        box_w, box_h = box[2] - box[0] + 1e-12, box[3] - box[1] + 1e-12
        lrud = (np.array([box_h / box_w, box_h / box_w, box_w / box_h, box_w / box_h],
                         dtype=np.float32) ** sampler.alpha) * sampler.base_probability
        check = np.array([box[0] / box_w, (img_w - box[2]) / box_w, box[1] / box_h,
                          (img_h - box[3]) / box_h], dtype=np.float32) \
            > (sampler.cut_off_thr + interval)
        lrud = np.clip(lrud * check.astype(np.float32), 0.0, sampler.base_probability)
        lrud[np.isnan(lrud)] = 0.0
        return lrud

    def box_possibilities(lrud):
        p = np.ones(9, dtype=np.float32)
        p[[0, 3, 6]] *= lrud[0]
        p[[2, 5, 8]] *= lrud[1]
        p[[0, 1, 2]] *= lrud[2]
        p[[6, 7, 8]] *= lrud[3]
        p[[0, 2, 6, 8]] **= 0.5
        return p

    def per_group(box_ids, perms, image_size, box_templates):
        boxes = box_templates[box_ids]
        boxes = clamp(boxes.reshape(-1, 2), image_size).reshape(-1, 4)
        corners = boxes.reshape(-1, 2)
        spanned = clamp(np.stack([corners.min(0), corners.max(0)], axis=0),
                        image_size).reshape(4)
        size = spanned[2:] - spanned[:2]
        normed = ((boxes.reshape(-1, 2, 2) - spanned[:2].reshape(1, 1, 2))
                  / (size.reshape(1, 1, 2) + 1e-12)).reshape(-1, 4)
        return ([torch.from_numpy(boxes[perm]) for perm in perms],
                [torch.from_numpy(normed[perm]) for perm in perms],
                torch.from_numpy(spanned), [[box_ids[i] for i in perm] for perm in perms])

    def sample(box, image_size, groups, perms):
        p = np.clip(box_possibilities(lrud_possibility(box, image_size)), 0.0, 1.0)
        num_valid = int((p > 0.0).sum()) - 1
        num_groups = min(sampler.max_groups, math.factorial(num_valid))
        if num_groups != len(groups):  # the replay must describe the same bags
            raise RuntimeError(f'replay mismatch: {len(groups)} groups, reference {num_groups}')
        box_w, box_h = box[2] - box[0] + 1e-12, box[3] - box[1] + 1e-12
        box_templates = templates * np.array([box_w, box_h, box_w, box_h],
                                             dtype=np.float32).reshape(1, 4)
        box_templates = box_templates + (np.array(box, dtype=np.float32)
                                         - box_templates[4]).reshape(1, 4)
        out = multi_apply(per_group, groups, perms, image_size=image_size,
                          box_templates=box_templates)
        groups_, normed, spanned, box_ids = out
        return groups_, normed, spanned, [b for ids in box_ids for b in ids]

    return sample


def _replay_choices(sample):
    """ovkit's bags of one image as the reference's per-proposal lists: group member cells
    (sorted) and the word orders (positions into them) of each group."""
    groups, perms = [[] for _ in range(len(sample['centres']))], \
        [[] for _ in range(len(sample['centres']))]
    bag_ids, cells = sample['bag_ids'].tolist(), sample['cells'].tolist()
    members = {}
    for b, c in zip(bag_ids, cells):
        members.setdefault(b, []).append(c)
    orders = {}
    first = {}
    for e, b in enumerate(bag_ids):
        first.setdefault(b, e)
    for row, b in zip(sample['sequences'].tolist(), sample['seq_bag'].tolist()):
        orders.setdefault(b, []).append([e - first[b] for e in row if e >= 0])
    for b, centre in enumerate(sample['bag_centre'].tolist()):
        groups[centre].append(sorted(members[b]))
        perms[centre].append(orders[b])
    return groups, perms


def _ref_block(block, x, mask, return_tokens=False, cls_indices=None):
    """The reference's ResidualAttentionBlock (LND, nn.MultiheadAttention weights through
    F.multi_head_attention_forward, explicit additive mask), with its MaskCLIP token path."""
    attn = block.attn
    y = block.ln_1(x)
    tokens = None
    if return_tokens:
        tokens = F.linear(y, attn.in_proj_weight, attn.in_proj_bias)[..., -attn.embed_dim:]
        tokens = F.linear(tokens, attn.out_proj.weight, attn.out_proj.bias)
    att = F.multi_head_attention_forward(
        y, y, y, attn.embed_dim, attn.num_heads, attn.in_proj_weight, attn.in_proj_bias,
        None, None, False, 0.0, attn.out_proj.weight, attn.out_proj.bias,
        training=False, need_weights=False, attn_mask=mask)[0]
    if return_tokens:
        cls_tokens = x[cls_indices, torch.arange(x.shape[1])] if not isinstance(
            cls_indices, int) else x[cls_indices]
        tokens = cls_tokens[None] + tokens
        tokens = tokens + block.mlp(block.ln_2(tokens))
    x = x + att
    x = x + block.mlp(block.ln_2(x))
    return x, tokens


def _causal_mask(length, device):
    return torch.full((length, length), float('-inf'), device=device).triu_(1)


def _ref_text_endk(clip, x, end_ids, stepk):
    """CLIPTextEncoder.encode_pseudo_text_endk of the reference (output of block ``stepk``)."""
    model = clip.model
    x = (x + model.positional_embedding[:x.shape[1]]).permute(1, 0, 2)
    mask = _causal_mask(x.shape[0], x.device)
    for block in model.transformer.resblocks[:stepk]:
        x, _ = _ref_block(block, x, mask)
    out = x.permute(1, 0, 2)[torch.arange(x.shape[1]), end_ids]
    return F.normalize(out, dim=-1)


def _ref_text(clip, x, end_ids):
    """CLIPTextEncoder.encode_pseudo_text(return_word_tokens=True) of the reference."""
    model = clip.model
    x = (x + model.positional_embedding[:x.shape[1]]).permute(1, 0, 2)
    mask = _causal_mask(x.shape[0], x.device)
    blocks = model.transformer.resblocks
    for block in blocks[:-1]:
        x, _ = _ref_block(block, x, mask)
    x, tokens = _ref_block(blocks[-1], x, mask, True, end_ids)
    x = model.ln_final(x.permute(1, 0, 2))
    out = F.normalize(x[torch.arange(x.shape[0]), end_ids] @ model.text_projection, dim=-1)
    tokens = model.ln_final(tokens.permute(1, 0, 2)) @ model.text_projection
    return out, [seq[1:e] for seq, e in zip(tokens, end_ids)]


def _ref_image(clip, x):
    """CLIPViT.encode_image(normalize=True, return_tokens=True) of the reference."""
    visual = clip.model.visual
    x = visual.conv1(x)
    grid = x.shape[-1]
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.to(x.dtype)
                   + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype, device=x.device),
                   x], dim=1)
    x = visual.ln_pre(x + visual.positional_embedding.to(x.dtype)).permute(1, 0, 2)
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        x, _ = _ref_block(block, x, None)
    x, tokens = _ref_block(blocks[-1], x, None, True, 0)
    x = F.normalize(visual.ln_post(x.permute(1, 0, 2)[:, 0, :]) @ visual.proj, dim=-1)
    tokens = visual.ln_post(tokens.permute(1, 0, 2)) @ visual.proj
    tokens = tokens[:, 1:].permute(0, 2, 1).contiguous().view(x.shape[0], -1, grid, grid)
    return x, tokens


def _ref_vision_to_language(head, feats):
    """BaronConvFCBBoxHead.vision_to_language of the reference (shared convs/fcs, fc_cls)."""
    x = feats
    for conv in head.shared_convs:
        x = conv(x)
    if head.num_shared_fcs > 0:
        x = x.flatten(1)
        for fc in head.shared_fcs:
            x = head.relu(fc(x))
    return head.fc_cls(x).view(-1, head.num_words, head.word_dim)


def _ref_sine(pos_embed, x):
    """SinePositionalEncoding of the reference, with ovkit's projection weights."""
    num_feats = pos_embed.proj[0].in_features // 4
    embed = x * (2 * math.pi)
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=x.device)
    dim_t = 1.2 ** (dim_t.div(2, rounding_mode='floor') - (num_feats // 4))
    pos = embed[:, :, None] * dim_t[None, None]
    pos[..., 0::2] = pos[..., 0::2].sin()
    pos[..., 1::2] = pos[..., 1::2].cos()
    return pos_embed.proj(pos.view(-1, 4 * num_feats)).view(-1, pos_embed.num_words,
                                                           pos_embed.word_dim)


def step_reference(clip, roi_head, inputs, replay):
    """The reference's code path for the same step (see the module docstring)."""
    from mmcv.ops import nms, roi_align
    from mmdet.models.utils import multi_apply
    from mmdet.structures.bbox import bbox2roi, bbox_overlaps, bbox_xyxy_to_cxcywh
    from mmengine.structures import InstanceData

    head, kd = roi_head.bbox_head, roi_head.kd
    dev = inputs['images'].device
    feats = inputs['feats']
    model = clip.model
    emb = model.token_embedding

    # ---- region classification (BaronBBoxHead.forward / pred_cls_logits)
    bbox_feats = roi_head.bbox_roi_extractor(feats[:roi_head.bbox_roi_extractor.num_inputs],
                                             inputs['rois'])
    pseudo_words = _ref_vision_to_language(head, bbox_feats)
    num_preds, num_words, word_dim = pseudo_words.shape
    mask = replay['region_keep'].float()
    ones = torch.ones_like(mask[:, :1])
    valid_mask = torch.cat([ones, mask, ones], dim=-1)
    sot = emb(torch.tensor([clip.sot_token_id], device=dev)).view(1, 1, word_dim)
    eot = emb(torch.tensor([clip.eot_token_id], device=dev)).view(1, 1, word_dim)
    tokens = torch.cat([sot.repeat(num_preds, 1, 1), pseudo_words,
                        eot.repeat(num_preds, 1, 1)], dim=1)  # prepare_pseudo_text_tensor
    length = num_words + 2
    flat, valid_flat = tokens.view(-1, word_dim), valid_mask.view(-1)
    empty = emb(torch.tensor([0], device=dev))
    template = empty.view(1, word_dim).repeat(num_preds * length, 1)
    zero_pad = torch.cat([torch.zeros_like(valid_mask[:, :1]), valid_mask], dim=-1)
    pe_idx = (zero_pad > 0.0).cumsum(dim=-1)[:, :-1]
    pe_idx = (pe_idx + (torch.arange(num_preds, device=dev) * length)[:, None]).view(-1)
    template[pe_idx[valid_flat > 0.0]] = flat[valid_flat > 0.0]
    text = template.view(num_preds, length, word_dim)
    end_ids = (valid_mask > 0.0).sum(-1).long() - 1
    cls_features = _ref_text_endk(clip, text, end_ids, head.text_layer)
    bg = F.normalize(head.bg_embedding(pseudo_words.new_ones(1, 1)), p=2, dim=-1)
    cls_logits = head.cls_temp * cls_features @ torch.cat([head.cls_embeddings, bg]).T
    class_weight = head.class_weight  # CustomCrossEntropyLoss: -inf for weight 0, weighted
    cls_logits = cls_logits.masked_fill(class_weight < 1e-5, float('-inf'))
    loss_cls = F.cross_entropy(cls_logits, inputs['labels'], weight=class_weight,
                               reduction='none').sum() / len(inputs['labels'])

    # ---- bag sampling per image (BaronKD.sample / _sample_on_topk / preprocess_proposals)
    sample_fn = _reference_sampler(kd.sampler)
    sampler_cfg = kd.sampler
    results = []
    for img_i, (props, meta) in enumerate(zip(inputs['proposals'], inputs['metas'])):
        h, w = meta['img_shape']
        proposals = InstanceData(bboxes=props[:, :4], scores=props[:, 4], metainfo=meta)
        num = min(len(proposals), sampler_cfg.num_proposals)
        proposals = proposals[proposals.scores.topk(num)[1]]
        image_box = torch.tensor([0.0, 0.0, w - 1.0, h - 1.0], device=dev)
        iofs = bbox_overlaps(image_box[None], proposals.bboxes, mode='iof')[0]
        size = proposals.bboxes[:, 2:4] - proposals.bboxes[:, :2]
        ratio = size[:, 0] / (size[:, 1] + 1e-12)
        valid = (ratio > sampler_cfg.shape_ratio_thr) & (ratio < 1 / sampler_cfg.shape_ratio_thr)
        valid &= (iofs > sampler_cfg.area_ratio_thr) \
            & (proposals.scores > sampler_cfg.objectness_thr)
        proposals = proposals[valid]
        _, kept = nms(proposals.bboxes, proposals.scores, sampler_cfg.nms_thr)
        proposals = proposals[kept]
        groups, perms = _replay_choices(replay['samples'][img_i])
        if len(groups) != len(proposals):
            raise RuntimeError(f'replay mismatch: {len(groups)} centres, reference '
                               f'{len(proposals)}')
        boxes = proposals.bboxes.tolist()
        groups_pp, normed, spanned, box_ids = multi_apply(sample_fn, boxes,
                                                          [(h, w)] * len(boxes), groups, perms)
        new_boxes = torch.cat([perm for p in groups_pp for g in p for perm in g]).to(dev)
        results.append(InstanceData(bboxes=new_boxes, metainfo=dict(
            img_id=meta['img_id'], normed_boxes=normed, spanned_boxes=spanned,
            box_ids=box_ids)))

    # ---- run_ovd: RoI features of every box of every word order, pseudo words
    rois = bbox2roi([r.bboxes for r in results])
    bag_feats = roi_head.bbox_roi_extractor(feats[:roi_head.bbox_roi_extractor.num_inputs],
                                            rois)
    words = _ref_vision_to_language(head, bag_feats)

    # ---- get_losses
    def per_image(res):
        box_ids = res.box_ids
        seq_ids = [list(map(_box_ids2seq_id, ids)) for ids in box_ids]
        seq_ids_img, start = [], 0
        for ids in seq_ids:
            seq_ids_img.extend([i + start for i in ids])
            start += max(ids) + 1
        res.set_field(name='seq_ids', value=seq_ids_img, field_type='metainfo', dtype=None)
        normed = res.normed_boxes
        perms_split = [perm.shape[0] for o in normed for g in o for perm in g]
        seq_level_origin = [sum(len(g) for g in o) for o in normed]
        normed = torch.cat([torch.cat(g, 0) for o in normed for g in o], 0).to(dev)
        spanned = torch.cat([torch.stack(o, 0) for o in res.spanned_boxes]).to(dev)
        return normed, spanned, perms_split, seq_level_origin

    normed, spanned, perms_split, seqs_by_origin = multi_apply(per_image, results)
    positions = bbox_xyxy_to_cxcywh(torch.cat(normed, 0))
    words = words + _ref_sine(kd.pos_embed, positions)
    # word dropout: ovkit's per-sentence masks, in the reference's box order
    keep, rows = replay['bag_keep'], []
    seq_start = 0
    for splits in perms_split:
        for s, n_boxes in enumerate(splits):
            rows.append(keep[seq_start + s, :n_boxes])
        seq_start += len(splits)
    word_masks = torch.cat(rows)
    seq_ids, start = [], 0
    for res in results:
        seq_ids += [i + start for i in res.seq_ids]
        start += max(res.seq_ids) + 1
    seq_ids = torch.tensor(seq_ids, dtype=torch.float64, device=dev)  # ref: float32
    flat_split = [p for b in perms_split for p in b]
    word_seqs = words.split(flat_split, 0)
    word_masks = word_masks.split(flat_split, 0)
    word_seqs = [seq.flatten(0, 1)[m.flatten(0, 1)] for seq, m in zip(word_seqs, word_masks)]
    context = max(seq.shape[0] for seq in word_seqs) + 2

    def pad_sequence(tokens):  # prepare_pseudo_text
        tokens = torch.cat([sot[0], tokens, eot[0]], 0)
        return torch.cat([tokens, empty.repeat(context - tokens.shape[0], 1)], 0), \
            tokens.shape[0] - 1

    text, end_ids = multi_apply(pad_sequence, word_seqs)
    text = torch.stack(text, 0)
    end_ids = torch.tensor(end_ids, dtype=torch.long, device=dev)
    text_feats, word_tokens = _ref_text(clip, text, end_ids)

    # teacher (_bbox_clip_image): crops per image, repeated once per word order
    with torch.no_grad():
        m_ = torch.tensor(clip.image_mean, device=dev) * 255
        s_ = torch.tensor(clip.image_std, device=dev) * 255
        pre_mean = ((m_ - inputs['mean']) / inputs['std']).view(1, 3, 1, 1)
        pre_std = (s_ / inputs['std']).view(1, 3, 1, 1)
        clip_images = (inputs['images'] - pre_mean) / pre_std
        size = clip.image_size
        crops = roi_align(clip_images, bbox2roi(spanned), (size, size), 1.0, 2, 'avg', True)
        crops = crops.split([b.shape[0] for b in spanned], 0)
        seqs_by_group = [[len(g) for o in res.normed_boxes for g in o] for res in results]
        repeated = [torch.cat([c[None].repeat(r, 1, 1, 1) for c, r in zip(cs, reps)])
                    for cs, reps in zip(crops, seqs_by_group)]
        image_feats, image_tokens = _ref_image(clip, torch.cat(repeated, 0))

    queues = {name: kd.queues[name].get() for name in kd.QUEUES}
    img_ids = torch.cat([torch.tensor(sum(b) * [r.img_id]) for b, r in
                         zip(seqs_by_origin, results)]).to(dev)
    label_mask = seq_ids[None] == seq_ids[:, None]
    label_mask.fill_diagonal_(False)

    def info_nce(queries, keys, q_feats, q_ids, q_img, temp, lmask):
        num = queries.shape[0]
        sim = temp * queries @ torch.cat([keys, q_feats]).T
        sim[:, :num][lmask] = float('-inf')
        if q_ids.shape[0] > 0:
            sim[:, num:][q_img[:, None] == q_ids[None]] = float('-inf')
        return F.cross_entropy(sim, torch.arange(num, device=dev))

    loss_bag = 0.5 * info_nce(text_feats, image_feats, *queues['bag_image'], img_ids,
                              kd.bag_temp, label_mask) \
        + 0.5 * info_nce(image_feats, text_feats, *queues['bag_text'], img_ids, kd.bag_temp,
                         label_mask)

    # single regions: per-box word features (Python), MaskCLIP patches per word order
    preds_by_batch = [n.shape[0] for n in normed]
    single_img = torch.cat([torch.tensor(b * [r.img_id]) for b, r in
                            zip(preds_by_batch, results)]).to(dev)
    normed_flat = torch.cat(normed, 0).split(flat_split, 0)
    patches = F.normalize(roi_align(image_tokens, bbox2roi(normed_flat).to(image_tokens.dtype),
                                    (1, 1), float(image_tokens.shape[-1]), 2, 'avg',
                                    True)[..., 0, 0], dim=-1)
    words_per_pred = [m.sum(-1).tolist() for m in word_masks]
    word_feats = [tk.split(spl) for tk, spl in zip(word_tokens, words_per_pred)]
    word_feats = F.normalize(torch.stack([f.mean(0).float() for fs in word_feats for f in fs]),
                             dim=-1)
    box_ids, start = [], 0
    for res in results:
        for ori in res.box_ids:
            ids = torch.cat([torch.tensor(perm, dtype=torch.float32) for perm in ori]) + start
            start += ids.max().item() + 1
            box_ids.append(ids)
    box_ids = torch.cat(box_ids).to(dev)
    box_mask = box_ids[None] == box_ids[:, None]
    box_mask.fill_diagonal_(False)
    loss_single = 0.5 * info_nce(word_feats, patches, *queues['single_image'], single_img,
                                 kd.single_temp, box_mask) \
        + 0.5 * info_nce(patches, word_feats, *queues['single_text'], single_img,
                         kd.single_temp, box_mask)
    # Queues.dequeue_and_enqueue of the reference (on copies: the step must not change state)
    for name, feats_ in (('bag_text', text_feats), ('bag_image', image_feats),
                         ('single_text', word_feats), ('single_image', patches)):
        ids = img_ids if name.startswith('bag') else single_img
        old = torch.cat(list(queues[name][:1]) + [queues[name][1][:, None].to(feats_)], 1)
        new = torch.cat([feats_, ids[:, None].to(feats_)], 1).detach()[:1024]
        torch.cat([new, old[:max(0, 1024 - new.shape[0])]])
    return dict(loss_cls=loss_cls, loss_bag=loss_bag * kd.bag_weight,
                loss_single=loss_single * kd.single_weight)


def _box_ids2seq_id(box_ids):
    return int(''.join(str(i) for i in sorted(box_ids, reverse=True)))


IMPLS = dict(ovkit=step_ovkit, reference=step_reference)


# ---------------------------------------------------------------------------------- measuring
def _leaves(roi_head, inputs):
    named = {f'feats[{i}]': f for i, f in enumerate(inputs['feats'])}
    named.update({f'head.{n}': p for n, p in roi_head.bbox_head.named_parameters()
                  if p.requires_grad})
    named.update({f'kd.{n}': p for n, p in roi_head.kd.named_parameters() if p.requires_grad})
    return named


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def step(name, clip, roi_head, inputs, replay, device):
    """One training step (forward + backward): (seconds, {loss: value}, {leaf: grad})."""
    leaves = _leaves(roi_head, inputs)
    for t in leaves.values():
        t.grad = None
    reset_queues(roi_head, inputs)
    _sync(device)
    t0 = time.perf_counter()
    losses = IMPLS[name](clip, roi_head, inputs, replay)
    sum(losses.values()).backward()
    _sync(device)
    seconds = time.perf_counter() - t0
    grads = {n: (t.grad if t.grad is not None else torch.zeros_like(t)).detach().clone()
             for n, t in leaves.items()}
    return seconds, {k: float(v.detach()) for k, v in losses.items()}, grads


def compare(a, b):
    """{quantity: (max abs diff, relative diff)} between two step results.

    A loss's relative difference is |a - b| / |b|; a gradient's is the L2 norm of the
    difference over the L2 norm of the reference's gradient. Not the largest element's: the two
    sides compute the bag boxes in a different order, so their coordinates differ by a few
    float32 ulps (up to 1.5e-4 px at 1333 px wide), and RoIAlign's gradient at a pixel is
    linear in them; at the CUDA sizes that moved single pixels of the FPN gradient by 2.3e-3 of
    its largest element, while its L2 difference was 2.6e-4 (measured on CPU). A wrong term in
    a loss moves the L2 norm by orders of magnitude more.
    """
    diffs = {}
    for key in b[1]:
        err = abs(a[1][key] - b[1][key])
        diffs[key] = (err, err / max(abs(b[1][key]), 1e-12))
    for n in b[2]:
        if not b[2][n].numel():
            diffs[f'grad {n}'] = (0.0, 0.0)
            continue
        delta = (a[2][n].double() - b[2][n].double())
        ref = float(b[2][n].double().norm())
        diffs[f'grad {n}'] = (float(delta.abs().max()),
                              float(delta.norm()) / ref if ref > 0 else float(delta.norm()))
    return diffs


def _proc_status(key):
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(key + ':'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_worker(args):
    """Fresh process: set up, then the RSS high-water mark of one step above the RSS before."""
    with tempfile.TemporaryDirectory() as tmp:
        clip, roi_head, inputs = build(args, tmp)
    replay = draw_replay(clip, roi_head, inputs)
    gc.collect()
    before = _proc_status('VmRSS')
    try:  # reset the high-water mark so that set-up peaks do not count (Linux >= 4.0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        raise SystemExit('peak memory on CPU needs Linux /proc (use --no-memory)') from None
    step(args.memory_worker, clip, roi_head, inputs, replay, args.device)
    print(_WORKER_TAG + json.dumps(dict(before=before, peak=_proc_status('VmHWM'))),
          flush=True)


def measure_memory_subprocess(name, argv):
    cmd = [sys.executable, osp.abspath(__file__), *argv, '--memory-worker', name]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_WORKER_TAG)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f'memory measurement of {name} failed ({proc.returncode}):\n'
                         f'{(proc.stdout + proc.stderr)[-3000:]}')
    res = json.loads(lines[-1][len(_WORKER_TAG):])
    return max(res['peak'] - res['before'], 0)


def measure_memory_cuda(name, clip, roi_head, inputs, replay, device):
    for t in _leaves(roi_head, inputs).values():
        t.grad = None
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(name, clip, roi_head, inputs, replay, device)
    return torch.cuda.max_memory_allocated(device) - before


def _fmt_s(s):
    return f'{s * 1000:,.1f} ms' if s < 10 else f'{s:,.1f} s'


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_worker:
        return memory_worker(args)
    device = args.device
    load0 = os.getloadavg()[0] if hasattr(os, 'getloadavg') else 0.0
    with tempfile.TemporaryDirectory() as tmp:
        clip, roi_head, inputs = build(args, tmp)
    t0 = time.perf_counter()
    replay = draw_replay(clip, roi_head, inputs)
    replay_s = time.perf_counter() - t0
    samples = replay['samples']
    n_bags = sum(len(s['spanned']) for s in samples)
    n_seq = sum(len(s['seq_bag']) for s in samples)
    n_entries = int(sum((s['sequences'] >= 0).sum() for s in samples))
    print(f'device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, '
          f'CLIP {args.model} (random weights; text width {clip.text_width}, '
          f'{clip.num_text_layers} text blocks, image size {clip.image_size}), box head '
          f'{args.head} ({args.channels} channels in, fc {args.fc_channels})')
    print(f'batch: {args.images} images {tuple(args.img_shape)}, {args.rois} RoIs each '
          f'({args.num_words} pseudo words, text layer {args.text_layer}, '
          f'{args.num_classes} classes + background); {args.proposals} proposals each -> '
          f"{sum(len(s['centres']) for s in samples)} bag centres, {n_bags} bags, {n_seq} "
          f'bag sentences, {n_entries} boxes in them; queues of 1024 per feature kind')
    print(f'the reference replays ovkit\'s random choices (drawn untimed in '
          f'{_fmt_s(replay_s)}); its own rejection sampling would add to its time')

    # check first (fails fast); it also warms both up
    res_o = step('ovkit', clip, roi_head, inputs, replay, device)
    res_r = step('reference', clip, roi_head, inputs, replay, device)
    diffs = compare(res_o, res_r)
    worst = max(rel for _, rel in diffs.values())
    if args.print_diff or worst > args.check_tol:
        for n, (err, rel) in diffs.items():
            print(f'  check {n}: max abs diff {err:.3e}, relative {rel:.3e}'
                  + (' (L2)' if n.startswith('grad ') else ''))
    print('losses: ' + ', '.join(f'{k} ovkit {res_o[1][k]:.6f} / reference {res_r[1][k]:.6f}'
                                 for k in res_r[1]))
    print(f'max_rel_diff={worst:.3e}')
    if worst > args.check_tol:
        raise SystemExit(f'equivalence check FAILED: ovkit and the reference differ by '
                         f'{worst:.3e} (relative) > --check-tol {args.check_tol:g}')
    print(f'equivalence check: passed (the three losses and the gradients of the features, '
          f'box head and position embedding agree within relative {args.check_tol:g}; '
          f'gradients in L2 norm)')

    for _ in range(args.warmup):
        step('ovkit', clip, roi_head, inputs, replay, device)
        step('reference', clip, roi_head, inputs, replay, device)
    times = dict(ovkit=[], reference=[])
    for _ in range(args.repeats):  # interleaved: both see the same machine load
        for name in times:
            times[name].append(step(name, clip, roi_head, inputs, replay, device)[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    for name in times:
        print(f'{name + ":":10s} {_fmt_s(med[name])} per step (median of {args.repeats}: '
              f"{', '.join(_fmt_s(t) for t in times[name])})")
    print(f"ratio (reference / ovkit): {med['reference'] / med['ovkit']:.2f}x")
    if hasattr(os, 'getloadavg'):
        print(f'machine load average (1 min): {load0:.2f} at start, {os.getloadavg()[0]:.2f} '
              f'now ({os.cpu_count()} CPUs; other processes distort CPU timings)')
    if args.no_memory:
        print('peak memory: not measured' + (' (--quick)' if args.quick else ''))
        return dict(times=med, losses=res_o[1], losses_reference=res_r[1], max_rel_diff=worst,
                    num_bag_sentences=n_seq)
    if device.type == 'cuda':
        mem = {n: measure_memory_cuda(n, clip, roi_head, inputs, replay, device)
               for n in times}
        how = 'torch.cuda.max_memory_allocated above the pre-step level'
    else:
        del clip, roi_head, inputs, replay
        gc.collect()
        mem = {n: measure_memory_subprocess(n, argv) for n in times}
        how = 'RSS high-water mark above the pre-step RSS, fresh process per side'
    print(f"peak memory of one step ({how}): ovkit {mem['ovkit'] / 2 ** 20:,.0f} MiB, "
          f"reference {mem['reference'] / 2 ** 20:,.0f} MiB")
    return dict(times=med, losses=res_o[1], losses_reference=res_r[1], max_rel_diff=worst,
                num_bag_sentences=n_seq, memory=mem)


if __name__ == '__main__':
    main()
