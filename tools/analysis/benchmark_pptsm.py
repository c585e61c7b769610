"""Speed of PP-TSM's shipped backbone and shift op against mmaction2's, in the same process.

    python tools/analysis/benchmark_pptsm.py [--clips 1] [--size 224] [--iters 5] [--quick]

1. Temporal shift, forward + backward: ``ovkit.pptsm.shift.temporal_shift`` against mmaction2's
   ``TemporalShift.shift`` on the R50 block inputs of one clip (both with a 1/8 fold, T = 8).
   The two move the folds in opposite directions; the check compares them after swapping the
   two folds, which maps one rule onto the other exactly.
2. Backbone, forward + backward in train mode: ``ResNetTweaksTSM(depth=50)`` against
   mmaction2's ``ResNetTSM(depth=50)`` at T x size^2. The vd stem costs more FLOPs than the
   7x7 stem, so the ratio that counts is FLOP-normalised: (GFLOP/s ours) / (GFLOP/s peer).
   FLOPs are counted by the same hook on both (2 x MACs of every conv, forward x 3 for
   forward + backward).
3. The achieved GFLOP/s as a fraction of a large fp32 matmul's on this machine.

``--quick`` runs tiny shapes (32^2) once, without warm-up, and checks that both sides compute
the same numbers; every check raises on a mismatch (also in the full run), so a printed
"equal" line means the check ran and passed. Timings are medians of interleaved runs; they are
only meaningful on a quiet machine.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn
from mmengine.logging import MMLogger

import ovkit.pptsm  # noqa: F401  (registers ResNetTweaksTSM; applies ovkit.compat)
from ovkit.pptsm.backbone import ResNetTweaksTSM
from ovkit.pptsm.shift import temporal_shift

T = 8


class Mismatch(RuntimeError):
    """ovkit and mmaction2 computed different numbers."""


def require(ok, what):
    """Raise :class:`Mismatch` with ``what`` unless ``ok`` (not an ``assert``: ``python -O``
    would drop it)."""
    if not ok:
        raise Mismatch(what)


def mmaction_peer():
    """mmaction2's ``ResNetTSM`` and ``TemporalShift``, imported after ovkit's compat fixes."""
    from mmaction.models.backbones.resnet_tsm import ResNetTSM, TemporalShift
    return ResNetTSM, TemporalShift


def conv_flops(model, x):
    """Forward FLOPs (2 x multiply-adds) of every Conv2d / Linear for input ``x``."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total[0] += 2 * out.numel() * k
        else:
            total[0] += 2 * out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return total[0]


def time_pair(fn_a, fn_b, iters, warmup=1):
    """Median seconds of ``fn_a`` and ``fn_b``, run interleaved so load hits both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    ta, tb = [], []
    for _ in range(iters):
        s = time.perf_counter()
        fn_a()
        ta.append(time.perf_counter() - s)
        s = time.perf_counter()
        fn_b()
        tb.append(time.perf_counter() - s)
    return statistics.median(ta), statistics.median(tb)


def matmul_gflops(n, iters):
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    times = []
    for _ in range(iters):
        s = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - s)
    return 2 * n**3 / statistics.median(times) / 1e9


def swap_folds(x, fold):
    """Exchange channel blocks [0, fold) and [fold, 2 fold)."""
    return torch.cat([x[:, fold:2 * fold], x[:, :fold], x[:, 2 * fold:]], 1)


def bench_shift(shapes, iters, check, warmup=1):
    _, TemporalShift = mmaction_peer()
    results = []
    for shape in shapes:
        x = torch.randn(*shape, requires_grad=True)
        g = torch.randn(*shape)
        fold = shape[1] // 8
        if check:
            ours = swap_folds(temporal_shift(swap_folds(x, fold), T), fold)
            peer = TemporalShift.shift(x, T, shift_div=8)
            require(torch.equal(ours, peer), f'shift outputs differ for {shape}')
            go, = torch.autograd.grad(ours, x, g)
            gp, = torch.autograd.grad(peer, x, g)
            # mmaction2 builds its zero pads as (a - a), whose gradient adds and subtracts
            # the same values: equal up to float rounding only.
            require(torch.allclose(go, gp, rtol=0, atol=1e-6),
                    f'shift gradients differ for {shape}: max |diff| {(go - gp).abs().max()}')

        def run(fn):
            def step():
                y = fn(x)
                torch.autograd.grad(y, x, g)
            return step

        t_ours, t_peer = time_pair(run(lambda v: temporal_shift(v, T)),
                                   run(lambda v: TemporalShift.shift(v, T, shift_div=8)), iters,
                                   warmup)
        results.append((shape, t_ours, t_peer))
    return results


def bench_backbone(clips, size, iters, check, warmup=1):
    ResNetTSM, _ = mmaction_peer()
    torch.manual_seed(0)
    ours = ResNetTweaksTSM(depth=50, num_segments=T)
    ours.init_weights()
    peer = ResNetTSM(depth=50, num_segments=T, shift_div=8, pretrained2d=False)
    peer.init_weights()
    ours.train()
    peer.train()
    x = torch.randn(clips * T, 3, size, size)
    f_ours, f_peer = 3 * conv_flops(ours, x), 3 * conv_flops(peer, x)
    out_shapes = None
    if check:
        out_shapes = (tuple(ours(x).shape), tuple(peer(x).shape))
        require(out_shapes[0] == out_shapes[1], f'output shapes differ: {out_shapes}')

    def step(model):
        def run():
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()
        return run

    t_ours, t_peer = time_pair(step(ours), step(peer), iters, warmup)
    return dict(f_ours=f_ours, f_peer=f_peer, t_ours=t_ours, t_peer=t_peer,
                out_shapes=out_shapes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--clips', type=int, default=1, help='clips of 8 frames per batch')
    parser.add_argument('--size', type=int, default=224, help='frame side')
    parser.add_argument('--iters', type=int, default=5, help='timed runs per side')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument('--quick', action='store_true',
                        help='32^2 frames, one run, no warm-up, with the equality checks (tests)')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Keep init_weights' per-parameter report out of the output.
    MMLogger.get_instance('benchmark_pptsm', log_level='WARNING')
    warmup = 1
    if args.quick:
        args.clips, args.size, args.iters, warmup = 1, 32, 1, 0
    s = args.size
    shift_shapes = [(args.clips * T, c, s // r, s // r)
                    for c, r in ((64, 4), (256, 4), (512, 8), (1024, 16), (2048, 32))]

    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'{args.clips} clip(s) x {T} frames x {s}^2, {args.iters} timed runs (median)')
    print('\n[1] temporal shift, forward + backward (ovkit vs mmaction2 TemporalShift.shift)')
    tot_o = tot_p = 0.0
    for shape, t_o, t_p in bench_shift(shift_shapes, args.iters, check=True, warmup=warmup):
        tot_o, tot_p = tot_o + t_o, tot_p + t_p
        print(f'  {str(shape):24s} ovkit {t_o * 1e3:8.2f} ms   mmaction2 {t_p * 1e3:8.2f} ms   '
              f'speed-up {t_p / t_o:5.2f}x')
    print(f'  all shapes: speed-up {tot_p / tot_o:.2f}x (target >= 2x)')
    print('  shift outputs and gradients equal (folds swapped): checked')

    print('\n[2] R50 backbone, forward + backward, train mode '
          '(ovkit ResNetTweaksTSM vs mmaction2 ResNetTSM)')
    r = bench_backbone(args.clips, s, args.iters, check=True, warmup=warmup)
    g_o, g_p = r['f_ours'] / r['t_ours'] / 1e9, r['f_peer'] / r['t_peer'] / 1e9
    print(f'  ovkit     {r["t_ours"] * 1e3:9.1f} ms  {r["f_ours"] / 1e9:7.2f} GFLOP  '
          f'{g_o:7.1f} GFLOP/s')
    print(f'  mmaction2 {r["t_peer"] * 1e3:9.1f} ms  {r["f_peer"] / 1e9:7.2f} GFLOP  '
          f'{g_p:7.1f} GFLOP/s')
    print(f'  time ratio (mmaction2 / ovkit): {r["t_peer"] / r["t_ours"]:.2f}x')
    print(f'  FLOP-normalised speed (ovkit GFLOP/s / mmaction2 GFLOP/s): {g_o / g_p:.2f}x '
          '(target >= 1.0x)')
    print(f'  output shapes equal: {r["out_shapes"][0]} (checked)')

    n = 256 if args.quick else 2048
    peak = matmul_gflops(n, 3 if args.quick else 5)
    print(f'\n[3] fp32 matmul {n}x{n}: {peak:.1f} GFLOP/s; backbone fwd+bwd reaches '
          f'{g_o / peak:.2f} (ovkit) and {g_p / peak:.2f} (mmaction2) of it')
    return 0


if __name__ == '__main__':
    main()
