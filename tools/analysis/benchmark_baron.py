"""Time BARON's head training step: ovkit's batched pseudo-word encoder vs a per-sequence baseline.

What is timed (forward + backward = one training step), for a realistic batch:

* region path: region features -> ``fc_cls`` -> pseudo words (word dropout) -> CLIP text encoder
  (output of block ``--text-layer``, "attn12") -> temperature x cosine logits -> cross-entropy;
* bag path: bags sampled by :class:`BagSampler` from random plausible proposals -> bag word
  sequences (member words + box position embeddings) -> CLIP text encoder (projected output)
  -> symmetric InfoNCE against fixed teacher features.

"ours" is the library code (``BaronBBoxHead``, ``BaronKD`` pieces, ``CLIPModel.
encode_pseudo_text``: all sequences in one batch, context = longest kept sequence + 2, SDPA).
"baseline" is the straightforward way to compute the same thing: each sequence on its own as
[start, words, end, pad...] padded to CLIP's 77 tokens through open_clip's own text transformer
with its 77x77 causal mask. Both run in this process on identical inputs and dropout masks, and
their losses and input/parameter gradients must agree (else the script fails).

Excluded from the timed step because they are identical in both and carry no gradient: the CLIP
image teacher (fixed random teacher features stand in for it) and bag sampling (timed apart).

Every baseline sequence is one 77-token pass, so its cost is linear in the number of sequences.
For the default batch on 2 CPU cores a full baseline step takes several minutes and ~50 GB, so
by default on CPU it runs on a random subset of the batch's sequences (regions and bags in
proportion) and its time and memory are scaled to the full count, printed as estimates;
``--baseline-sequences all`` measures the full batch (the default on CUDA).
Peak memory: CPU = RSS high-water mark of one step in a fresh subprocess per implementation;
CUDA = ``torch.cuda.max_memory_allocated`` over one step.

    python tools/analysis/benchmark_baron.py                # ViT-B-32, 2 x 512 RoIs, ~5 min CPU
    python tools/analysis/benchmark_baron.py --device cuda
    python tools/analysis/benchmark_baron.py --model tiny --rois 4 --proposals 8 --print-diff
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

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

_WORKER_TAG = 'BENCHMARK_BARON_MEMORY '
_CPU_BASELINE_SEQUENCES = 48


# ---------------------------------------------------------------------------------- arguments
def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Time BARON head training steps: batched pseudo-word encoding (ours) vs a '
                    'per-sequence 77-token baseline; prints the ratio and peak memory.')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (or 'cuda:N')")
    p.add_argument('--model', default='ViT-B-32',
                   help="open_clip architecture with random weights, or 'tiny' for smoke runs")
    p.add_argument('--images', type=int, default=2, help='images per batch')
    p.add_argument('--rois', type=int, default=512, help='sampled RoIs per image')
    p.add_argument('--proposals', type=int, default=300, help='RPN proposals per image for bags')
    p.add_argument('--img-shape', type=int, nargs=2, default=(800, 1333), metavar=('H', 'W'))
    p.add_argument('--feat-dim', type=int, default=1024, help='RoI feature width (fc_cls input)')
    p.add_argument('--num-words', type=int, default=6)
    p.add_argument('--num-classes', type=int, default=65,
                   help='classes; a zero background embedding is appended (65 -> 66 logits)')
    p.add_argument('--word-drop', type=float, default=0.5, help='word dropout ratio')
    p.add_argument('--text-layer', type=int, default=None,
                   help='text block whose output classifies regions (default: the last, i.e. '
                        '12 = "attn12" for ViT-B-32)')
    p.add_argument('--cls-temp', type=float, default=50.0)
    p.add_argument('--bag-temp', type=float, default=30.0)
    p.add_argument('--warmup', type=int, default=None,
                   help='untimed full-batch steps of ours before timing (default: 1 on CUDA, 0 '
                        'on CPU); the equivalence-check steps already warm both up')
    p.add_argument('--repeats', type=int, default=3, help='timed steps of ours (median)')
    p.add_argument('--baseline-repeats', type=int, default=None,
                   help='timed steps of the baseline after its check step (median; default 3 '
                        'on a subset, 1 with --baseline-sequences all, as it is slow)')
    p.add_argument('--baseline-sequences', default=None,
                   help="sequences the baseline runs on: 'all', or N >= 2 (a random subset, "
                        "time and memory scaled by all/N). Default: 'all' on CUDA, "
                        f'{_CPU_BASELINE_SEQUENCES} on CPU')
    p.add_argument('--check-tol', type=float, default=1e-3,
                   help='relative tolerance of the loss/gradient equivalence check')
    p.add_argument('--print-diff', action='store_true',
                   help='print the measured loss and gradient differences of the check')
    p.add_argument('--no-memory', action='store_true', help='skip the peak-memory measurement')
    p.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--memory-worker', choices=('ours', 'baseline'), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    def bad(msg):
        p.error(msg)

    for name in ('images', 'rois', 'proposals', 'feat_dim', 'num_words', 'num_classes',
                 'repeats', 'baseline_repeats'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            bad(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup is not None and args.warmup < 0:
        bad(f'--warmup must be >= 0, got {args.warmup}')
    if min(args.img_shape) < 16:
        bad(f'--img-shape must be at least 16 x 16 pixels, got {tuple(args.img_shape)}')
    if not 0.0 <= args.word_drop < 1.0:
        bad(f'--word-drop must lie in [0, 1), got {args.word_drop}')
    if not args.check_tol > 0:
        bad(f'--check-tol must be > 0, got {args.check_tol}')
    if args.threads is not None and args.threads < 1:
        bad(f'--threads must be >= 1, got {args.threads}')
    try:
        args.device = torch.device(args.device)
    except RuntimeError:
        bad(f"--device '{args.device}' is not a torch device; use 'cpu' or 'cuda'")
    if args.device.type not in ('cpu', 'cuda'):
        bad(f"--device must be 'cpu' or 'cuda', got '{args.device}'")
    if args.device.type == 'cuda' and not torch.cuda.is_available():
        bad('--device cuda: no CUDA device is available (torch.cuda.is_available() is False)')
    seqs = args.baseline_sequences
    if seqs is None:
        seqs = 'all' if args.device.type == 'cuda' else _CPU_BASELINE_SEQUENCES
    elif seqs != 'all':
        try:
            seqs = int(seqs)
        except ValueError:
            seqs = -1
        if seqs < 2:
            bad(f"--baseline-sequences must be 'all' or an int >= 2, got "
                f'{args.baseline_sequences!r}')
    args.baseline_sequences = seqs
    if args.warmup is None:
        args.warmup = 1 if args.device.type == 'cuda' else 0
    if args.baseline_repeats is None:
        args.baseline_repeats = 1 if seqs == 'all' else 3
    return args


# ---------------------------------------------------------------------------------- set-up
def build_models(args, workdir):
    """Random CLIP (text tower kept), the real BaronBBoxHead and BaronKD (for its pieces)."""
    import mmdet.models  # noqa: F401  (losses the head builds)
    from mmdet.registry import MODELS

    import ovkit.baron  # noqa: F401  (registers the head)
    from ovkit.baron import BaronKD
    from ovkit.clip import CLIPModel
    from ovkit.clip.builder import _create_architecture

    torch.manual_seed(args.seed)  # fc_cls and the box position embedding init
    try:
        model = _create_architecture(args.model, True, args.seed)
    except ValueError as err:
        raise SystemExit(f'--model: {err}') from None
    clip = CLIPModel(model, model_name=args.model)
    clip.model.visual = None  # the image teacher is not part of the timed step
    layer = clip.num_text_layers if args.text_layer is None else args.text_layer
    if not 1 <= layer <= clip.num_text_layers:
        raise SystemExit(f'--text-layer {layer}: CLIP {args.model} has '
                         f'{clip.num_text_layers} text blocks; use 1..{clip.num_text_layers}.')
    args.text_layer = layer
    gen = torch.Generator().manual_seed(args.seed + 1)
    # the .npy is what the head reads; 'attn' in the name = layer-k space (silences its warning)
    emb_path = osp.join(workdir, 'cls_attn.npy')
    np.save(emb_path, torch.randn(args.num_classes, clip.text_width, generator=gen).numpy())
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet'):  # whatever scope the caller left set
        head = MODELS.build(dict(
            type='BaronBBoxHead', with_avg_pool=True, with_reg=False,
            in_channels=args.feat_dim,
            num_classes=args.num_classes, num_words=args.num_words, word_dim=clip.text_width,
            cls_embeddings_path=emb_path, words_drop_ratio=args.word_drop,
            cls_temp=args.cls_temp, text_layer=layer))
    kd = BaronKD(num_words=args.num_words, word_dim=clip.text_width, embed_dim=clip.embed_dim,
                 bag_temp=args.bag_temp, single_weight=0.0, word_drop_ratio=args.word_drop)
    clip.to(args.device)
    head.to(args.device).train()
    kd.to(args.device).train()
    head.set_clip(clip)
    return clip, head, kd


def make_proposals(num, img_shape, gen):
    """``num`` boxes [num, 5] that pass the sampler's filters often: sqrt(area) 48..640 px,
    aspect 1:2..2:1, anywhere in the image, objectness 0.86..1 (sorted)."""
    h, w = img_shape
    size = torch.empty(num).uniform_(math.log(48), math.log(640), generator=gen).exp()
    aspect = torch.empty(num).uniform_(math.log(0.5), math.log(2.0), generator=gen).exp()
    bw, bh = size * aspect.sqrt(), size / aspect.sqrt()
    cx, cy = torch.rand(num, generator=gen) * w, torch.rand(num, generator=gen) * h
    boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
    boxes = torch.minimum(boxes.clamp(min=0), torch.tensor([w, h, w, h], dtype=boxes.dtype))
    scores = (0.86 + 0.14 * torch.rand(num, generator=gen)).sort(descending=True).values
    return torch.cat([boxes, scores[:, None]], 1)


def build_problem(args, clip, head, kd):
    """All inputs of one step, identical for both implementations (seeded, incl. dropout)."""
    from ovkit.baron.kd import _collate
    dev = args.device
    gen = torch.Generator().manual_seed(args.seed + 2)
    num_rois = args.images * args.rois
    shapes = [tuple(args.img_shape)] * args.images
    proposals = [make_proposals(args.proposals, shapes[0], gen) for _ in range(args.images)]
    t0 = time.perf_counter()
    samples = kd.sampler.sample(proposals, shapes, None, gen)
    batch = _collate(samples, list(range(args.images)), torch.device('cpu'))
    sample_s = time.perf_counter() - t0
    if batch is None:
        raise SystemExit('the bag sampler found no bag; raise --proposals or --img-shape')
    num_regions = batch['region_rois'].shape[0]
    labels = torch.randint(args.num_classes, (num_rois,), generator=gen)
    labels = torch.where(torch.rand(num_rois, generator=gen) < 0.25, labels, args.num_classes)
    prob = dict(
        region_feats=torch.randn(num_rois, args.feat_dim, generator=gen),
        labels=labels,
        bag_region_feats=torch.randn(num_regions, args.feat_dim, generator=gen),
        region_index=batch['region_index'], box_pos=batch['box_pos'],
        sequences=batch['sequences'], seq_bag=batch['seq_bag'], seq_img=batch['seq_img_ids'],
        teacher=F.normalize(torch.randn(batch['span_rois'].shape[0], clip.embed_dim,
                                        generator=gen), dim=-1))
    # dropout masks with the library's own functions, drawn once and shared by both
    torch.manual_seed(args.seed + 3)
    prob['region_keep'] = head.words_valid_mask(torch.empty(num_rois, args.num_words, 0))
    if prob['region_keep'] is None:
        prob['region_keep'] = torch.ones(num_rois, args.num_words, dtype=torch.bool)
    prob['entry_keep'] = kd._word_keep_mask(batch['box_pos'].shape[0], torch.device('cpu'), gen)
    prob = {k: v.to(dev) for k, v in prob.items()}
    prob['region_feats'].requires_grad_(True)
    prob['bag_region_feats'].requires_grad_(True)
    prob.update(region_rows=None, seq_rows=None)
    info = dict(num_rois=num_rois, num_bags=batch['span_rois'].shape[0],
                num_entries=batch['box_pos'].shape[0], num_regions=num_regions,
                num_centres=sum(int(s['centres'].shape[0]) for s in samples), sample_s=sample_s)
    return prob, info


def subset(prob, k, seed):
    """The same problem restricted to ``k`` random sequences (region/bag in proportion)."""
    n_reg, n_seq = prob['region_feats'].shape[0], prob['sequences'].shape[0]
    total = n_reg + n_seq
    if k >= total:
        return dict(prob)
    k_seq = min(n_seq, k - 1, max(1, round(k * n_seq / total)))  # >= 1 of each kind
    k_reg = min(n_reg, k - k_seq)
    gen = torch.Generator().manual_seed(seed + 4)
    dev = prob['region_feats'].device
    out = dict(prob)
    out['region_rows'] = torch.randperm(n_reg, generator=gen)[:k_reg].sort().values.to(dev)
    out['seq_rows'] = torch.randperm(n_seq, generator=gen)[:k_seq].sort().values.to(dev)
    return out


def _select(prob):
    """(region feats, keep, labels, sequences, seq_bag, seq_img) of the problem's rows."""
    rows, srows = prob['region_rows'], prob['seq_rows']
    pick = (lambda t, r: t if r is None else t[r])
    return (pick(prob['region_feats'], rows), pick(prob['region_keep'], rows),
            pick(prob['labels'], rows), pick(prob['sequences'], srows),
            pick(prob['seq_bag'], srows), pick(prob['seq_img'], srows))


def sizes(prob, context_length):
    """Sequence counts and tokens through the text encoder per step for both."""
    feats, keep, _, seq, _, _ = _select(prob)
    entry_keep = prob['entry_keep']
    kept_r = keep.sum(1)
    present = seq >= 0
    kept_b = (entry_keep[seq.clamp(min=0)].sum(2) * present).sum(1)
    n_r, n_b = feats.shape[0], seq.shape[0]
    ctx_r = int(kept_r.max()) + 2 if n_r else 0
    ctx_b = int(kept_b.max()) + 2 if n_b else 0
    return dict(region_seqs=n_r, bag_seqs=n_b, ctx_r=ctx_r, ctx_b=ctx_b,
                ours_tokens=n_r * ctx_r + n_b * ctx_b,
                real_tokens=int(kept_r.sum() + kept_b.sum()) + 2 * (n_r + n_b),
                baseline_tokens=(n_r + n_b) * context_length)


# ---------------------------------------------------------------------------------- the two steps
def loss_ours(prob, clip, head, kd):
    """Library path: BaronBBoxHead for regions, BaronKD's bag sentences and InfoNCE for bags."""
    from ovkit.baron import symmetric_info_nce
    feats, keep, labels, seq, seq_bag, seq_img = _select(prob)
    words = head.region_words(feats)
    loss_cls = F.cross_entropy(head.cls_logits(head.encode_words(words, keep)), labels)

    # as BaronKD.forward: entry words = region words + box position embedding, one sentence
    # per word order, dropped words removed by the encoder
    bag_words = head.region_words(prob['bag_region_feats'])
    entry_words = bag_words[prob['region_index']] \
        + kd.pos_embed(prob['box_pos']).to(bag_words.dtype)
    present = seq >= 0
    length = int(present.sum(1).max())
    seq, present = seq[:, :length], present[:, :length]
    idx = seq.clamp(min=0)
    seq_words = (entry_words[idx] * present[..., None, None]).flatten(1, 2)
    seq_valid = (prob['entry_keep'][idx] & present[..., None]).flatten(1, 2)
    bag_text = clip.encode_pseudo_text(seq_words, seq_valid, normalize=True).float()
    loss_bag = symmetric_info_nce(bag_text, prob['teacher'][seq_bag], kd.bag_temp, seq_bag,
                                  seq_img)
    return loss_cls + loss_bag


def _encode_one(clip, words, layer):
    """One sequence the straightforward way: [start, words, end, pad] to 77 tokens, open_clip's
    own text transformer with its 77x77 causal mask, feature at the end token, normalised."""
    model = clip.model
    emb = model.token_embedding.weight
    k = words.shape[0]
    pad = emb[clip.pad_token_id].expand(clip.context_length - k - 2, -1)
    x = torch.cat([emb[clip.sot_token_id][None], words, emb[clip.eot_token_id][None], pad])
    x = (x + model.positional_embedding)[None]
    if layer is None or layer == clip.num_text_layers:
        x = model.transformer(x, attn_mask=model.attn_mask)
    else:
        for block in model.transformer.resblocks[:layer]:
            x = block(x, attn_mask=model.attn_mask)
    x = x[0, k + 1]
    if layer is None:
        x, proj = model.ln_final(x), model.text_projection
        x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    return F.normalize(x, dim=-1)


def loss_baseline(prob, clip, head, kd):
    """Same math, one sequence at a time (Python loops, 77-token context)."""
    feats, keep, labels, seq, seq_bag, _ = _select(prob)
    words = head.fc_cls(feats).view(-1, head.num_words, head.word_dim)
    # unbind: one backward node for all rows (indexing row by row would scatter a full-size
    # gradient per row and slow the baseline down for reasons unrelated to the encoder)
    region = torch.stack([_encode_one(clip, w[k], head.text_layer)
                          for w, k in zip(words.unbind(0), keep.unbind(0))])
    classes = torch.cat([head.cls_embeddings, head.bg_embedding])
    loss_cls = F.cross_entropy(head.cls_temp * region @ classes.t(), labels)

    bag_words = head.fc_cls(prob['bag_region_feats']).view(-1, head.num_words, head.word_dim)
    entry_words = bag_words[prob['region_index']] + kd.pos_embed(prob['box_pos'])
    entries = [w[k] for w, k in zip(entry_words.unbind(0), prob['entry_keep'].unbind(0))]
    texts = []
    for row in seq.tolist():
        words_s = torch.cat([entries[e] for e in row if e >= 0])
        texts.append(_encode_one(clip, words_s, None))
    text = torch.stack(texts)
    image = prob['teacher'][seq_bag]
    same_bag = seq_bag[:, None] == seq_bag[None, :]
    same_bag.fill_diagonal_(False)
    target = torch.arange(text.shape[0], device=text.device)
    t2i = (kd.bag_temp * text @ image.t()).masked_fill(same_bag, -math.inf)
    i2t = (kd.bag_temp * image @ text.t()).masked_fill(same_bag, -math.inf)
    loss_bag = 0.5 * F.cross_entropy(t2i, target) + 0.5 * F.cross_entropy(i2t, target)
    return loss_cls + loss_bag


IMPLS = dict(ours=loss_ours, baseline=loss_baseline)


# ---------------------------------------------------------------------------------- measuring
def _leaves(prob, head, kd):
    named = {'region_feats': prob['region_feats'], 'bag_region_feats': prob['bag_region_feats']}
    named.update({f'head.{n}': p for n, p in head.named_parameters() if p.requires_grad})
    named.update({f'kd.{n}': p for n, p in kd.named_parameters() if p.requires_grad})
    return named


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def step(name, prob, models, device):
    """One training step (forward + backward); returns (seconds, loss, {leaf: grad})."""
    leaves = _leaves(prob, models[1], models[2])
    for t in leaves.values():
        t.grad = None
    _sync(device)
    t0 = time.perf_counter()
    try:
        loss = IMPLS[name](prob, *models)
        loss.backward()
        _sync(device)
    except torch.cuda.OutOfMemoryError:
        raise SystemExit(f'{name}: out of GPU memory; the baseline keeps a 77-token graph per '
                         'sequence until backward: pass --baseline-sequences N (e.g. 256) to '
                         'run it on a subset and scale, or fewer --rois') from None
    seconds = time.perf_counter() - t0
    grads = {n: (t.grad if t.grad is not None else torch.zeros_like(t)).detach().clone()
             for n, t in leaves.items()}
    return seconds, float(loss.detach()), grads


def compare(ours, base):
    """{quantity: (max abs diff, relative diff)}: the loss, and per leaf gradient relative to
    the largest baseline gradient entry (tiny entries would make elementwise ratios noise)."""
    (_, loss_o, grads_o), (_, loss_b, grads_b) = ours, base
    err = abs(loss_o - loss_b)
    diffs = {'loss': (err, err / max(abs(loss_b), 1e-12))}
    for n in grads_b:
        if not grads_b[n].numel():
            continue
        ref = float(grads_b[n].abs().max())
        err = float((grads_o[n] - grads_b[n]).abs().max())
        diffs[f'grad {n}'] = (err, err / ref if ref > 0 else err)
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


def _maxrss_bytes():
    import resource  # Unix only; only needed where /proc is missing
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == 'darwin' else rss * 1024


def memory_worker(args):
    """Fresh process: set up, then peak RSS of one step above the RSS just before it."""
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(args, tmp)
        prob, _ = build_problem(args, *models)
    if args.memory_worker == 'baseline' and args.baseline_sequences != 'all':
        prob = subset(prob, args.baseline_sequences, args.seed)
    gc.collect()
    before = _proc_status('VmRSS')
    method = 'VmHWM reset'
    try:  # reset the RSS high-water mark so set-up peaks do not count (Linux >= 4.0)
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
    except OSError:
        method = 'ru_maxrss'
    if before is None:  # no /proc: the set-up high-water mark is the reference
        before, method = _maxrss_bytes(), 'ru_maxrss'
    step(args.memory_worker, prob, models, args.device)
    peak = _proc_status('VmHWM') if method == 'VmHWM reset' else _maxrss_bytes()
    print(_WORKER_TAG + json.dumps(dict(before=before, peak=peak, method=method)), flush=True)


def measure_memory_subprocess(name, argv):
    cmd = [sys.executable, osp.abspath(__file__), *argv, '--memory-worker', name]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(_WORKER_TAG)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f'memory measurement of {name} failed ({proc.returncode}):\n'
                         f'{(proc.stdout + proc.stderr)[-3000:]}')
    res = json.loads(lines[-1][len(_WORKER_TAG):])
    return max(res['peak'] - res['before'], 0), res['method']


def measure_memory_cuda(name, prob, models, device):
    for t in _leaves(prob, models[1], models[2]).values():
        t.grad = None  # the previous step's gradients are not part of this one
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step(name, prob, models, device)
    return torch.cuda.max_memory_allocated(device) - before, 'torch.cuda.max_memory_allocated'


def _mib(n):
    return f'{n / 2 ** 20:,.0f} MiB'


def _fmt_s(s):
    return f'{s * 1000:,.1f} ms' if s < 10 else f'{s:,.1f} s'


# ---------------------------------------------------------------------------------- main
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
        models = build_models(args, tmp)
        prob, info = build_problem(args, *models)
    clip = models[0]
    full = sizes(prob, clip.context_length)
    n_full = full['region_seqs'] + full['bag_seqs']
    base_prob = prob if args.baseline_sequences == 'all' \
        else subset(prob, args.baseline_sequences, args.seed)
    part = sizes(base_prob, clip.context_length)
    n_part = part['region_seqs'] + part['bag_seqs']
    scale = n_full / n_part

    print(f'device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, '
          f'CLIP {args.model} (random weights, {clip.num_text_layers} text blocks, width '
          f'{clip.text_width}), text layer {args.text_layer} for regions, projected output for '
          'bags')
    print(f"batch: {args.images} images x {args.rois} RoIs = {full['region_seqs']} region "
          f"sequences ({args.num_words} words, dropout {args.word_drop}, "
          f'{args.num_classes + 1} logits incl. background); {args.proposals} proposals/image '
          f"-> {info['num_centres']} bag centres, {info['num_bags']} bags, "
          f"{info['num_regions']} bag regions, {full['bag_seqs']} bag sequences")
    print(f"tokens through the text encoder per step: ours {full['region_seqs']} x "
          f"{full['ctx_r']} + {full['bag_seqs']} x {full['ctx_b']} = {full['ours_tokens']:,} "
          f"(context = longest kept sequence + 2; {full['real_tokens']:,} non-pad); baseline "
          f"{n_full} x {clip.context_length} = {full['baseline_tokens']:,}")
    print(f"excluded from both timings (identical, no gradient): the CLIP image teacher (fixed "
          f"random teacher features stand in for it) and bag sampling ({_fmt_s(info['sample_s'])})")

    # The check runs first (fails fast) and doubles as both implementations' warm-up.
    check = compare(step('ours', base_prob, models, device),
                    step('baseline', base_prob, models, device))
    worst = max(rel for _, rel in check.values())
    where = 'the full batch' if n_part == n_full else f'the baseline subset of {n_part} sequences'
    if args.print_diff or worst > args.check_tol:
        for n, (err, rel) in check.items():
            print(f'  check {n}: max abs diff {err:.3e}, relative {rel:.3e}')
        print(f'max_rel_diff={worst:.3e}')
    if worst > args.check_tol:
        raise SystemExit(f'equivalence check FAILED on {where}: ours and the baseline differ by '
                         f'{worst:.3e} (relative) > --check-tol {args.check_tol:g}')
    print(f'equivalence check: passed on {where} (loss and all input/parameter gradients agree '
          f'within relative tolerance {args.check_tol:g}; identical inputs and dropout masks)')

    warm = [step('ours', prob, models, device)[0] for _ in range(args.warmup)]
    # interleaved, so that both see the same machine load
    ours_runs, base_runs = [], []
    for r in range(max(args.repeats, args.baseline_repeats)):
        if r < args.repeats:
            ours_runs.append(step('ours', prob, models, device)[0])
        if r < args.baseline_repeats:
            base_runs.append(step('baseline', base_prob, models, device)[0])
    ours_s = statistics.median(ours_runs)
    base_part_s = statistics.median(base_runs)
    base_s = base_part_s * scale

    def listing(times):
        return ', '.join(_fmt_s(t) for t in times)

    print(f'ours:     {_fmt_s(ours_s)} per step (median of {args.repeats}: {listing(ours_runs)}; '
          f"warm-up: {listing(warm) or 'the check step'})")
    if n_part == n_full:
        print(f'baseline: {_fmt_s(base_s)} per step (median of {args.baseline_repeats}: '
              f'{listing(base_runs)})')
    else:
        print(f'baseline: {_fmt_s(base_s)} per step, estimated: measured {_fmt_s(base_part_s)} '
              f'(median of {args.baseline_repeats}: {listing(base_runs)}) on {n_part} of '
              f'{n_full} sequences ({part["region_seqs"]} region, {part["bag_seqs"]} bag) x '
              f'{scale:.2f} (every baseline sequence is one {clip.context_length}-token pass)')
    print(f'ratio (baseline / ours): {base_s / ours_s:.1f}x')
    if hasattr(os, 'getloadavg'):
        print(f'machine load average (1 min): {load0:.2f} at start, {os.getloadavg()[0]:.2f} '
              f'now ({os.cpu_count()} CPUs; other processes competing distort CPU timings)')

    if args.no_memory:
        print('peak memory: not measured (--no-memory)')
        return 0
    if device.type == 'cuda':
        mem_o, method = measure_memory_cuda('ours', prob, models, device)
        mem_b, _ = measure_memory_cuda('baseline', base_prob, models, device)
    else:
        del models, prob, base_prob
        gc.collect()
        mem_o, method = measure_memory_subprocess('ours', argv)
        mem_b, _ = measure_memory_subprocess('baseline', argv)
    if n_part == n_full:
        base_txt = f'baseline {_mib(mem_b)}'
    else:
        base_txt = (f'baseline ~{_mib(mem_b * scale)} (estimated: {_mib(mem_b)} measured on '
                    f'{n_part} sequences x {scale:.2f}; the graph of every sequence is kept '
                    'until backward)')
    where = 'one step, fresh process per implementation, RSS above the pre-step RSS' \
        if device.type == 'cpu' else 'one step, CUDA memory allocated above the pre-step level'
    print(f'peak memory ({where}; {method}): ours {_mib(mem_o)}, {base_txt}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
