"""Throughput of ovkit's dump comparison against a straightforward numpy implementation, and
the cost of the error attribution.

    python tools/analysis/benchmark_accuracy.py [--gb 2] [--workers N] [--tmp DIR] [--quick]

Comparison: writes two dumps (A and B, ``--gb`` GB together, float32 tensors of CNN-like
sizes, half of them ReLU-like with ~50% zeros) to a temporary directory, then compares them
twice in this process:

* baseline: for each pair, ``np.load`` both whole arrays, cast to float64 and compute the
  same metrics with one numpy expression each, in this process; timed with numpy's default
  BLAS threads and with one BLAS thread, the faster of the two is the reference;
* ovkit: :func:`ovkit.accuracy.compare_dumps` (memory-mapped, streamed in cache-sized chunks),
  in one worker and then in ``--workers`` (default: all cores) parallel worker processes.

Prints GB/s of compared data (bytes of A + B per second) for each, the ratios, peak memory
(growth of the peak resident set, VmHWM, over the level before: the baseline process, and
each ovkit worker) and the largest disagreement between the two sets of metrics.

Attribution: mmpretrain's ResNet-18 (random weights) dumped under ``--setting`` (fp16) with
:func:`ovkit.accuracy.dump_module`, once plain and once isolating every module on the fp32
reference's recorded inputs; prints the plain forward pass under the setting, both dump
times and the extra cost of the isolation in forward passes (the issue's budget: one).

The dumps are deleted afterwards. Timings vary with machine load: compare ratios within one
run. ``--quick`` (a test runs it) uses 20 MB of dumps and a 64-pixel input, and exits with
status 1 when the two implementations disagree.
"""
import argparse
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from ovkit.accuracy.compare import compare_dumps
from ovkit.accuracy.manifest import DumpWriter, load_dump
from ovkit.accuracy.resources import reset_peak_rss, single_thread_blas, status_kb

# (elements, count) of one "model": a mix of feature maps, from 64 Ki to 16 Mi elements
LAYOUT = [(1 << 16, 8), (1 << 18, 8), (1 << 20, 8), (1 << 22, 6), (1 << 24, 2)]
METRICS = ('cosine_similarity', 'relative_euclidean_distance', 'max_absolute_error',
           'mean_absolute_error', 'root_mean_square_error', 'max_relative_error',
           'mean_relative_error', 'accumulated_relative_error', 'kl_divergence', 'sqnr_db',
           'error_ratio_1e-3', 'error_ratio_5e-3', 'mean_a', 'std_a', 'mean_b', 'std_b')


QUICK_LAYOUT = [(1 << 12, 8), (1 << 16, 8), (1 << 18, 4)]


def make_dumps(root, gb, seed=0, layout=LAYOUT):
    """Two dumps of ``gb`` GB together; returns (dir_a, dir_b, largest tensor bytes)."""
    rng = np.random.default_rng(seed)
    per_model = sum(n * c for n, c in layout) * 4 * 2
    repeats = max(1, math.ceil(gb * 1e9 / per_model))
    wa, wb = DumpWriter(os.path.join(root, 'a')), DumpWriter(os.path.join(root, 'b'))
    i = 0
    for _ in range(repeats):
        for n, count in layout:
            for _ in range(count):
                a = rng.standard_normal(n, dtype=np.float32)
                if i % 2:
                    np.maximum(a, 0, out=a)  # ReLU output: zeros for the relative metrics
                noise = rng.standard_normal(n, dtype=np.float32)
                noise *= 1e-3
                b = a + noise
                wa.add(f'layer{i}', a)
                wb.add(f'layer{i}', b)
                i += 1
                del a, b, noise
    wa.close(setting=dict(name='fp32'))
    wb.close(setting=dict(name='noisy'))
    return wa.root, wb.root, max(n for n, _ in layout) * 4


def baseline_pair(fa, fb):
    """The obvious numpy code: whole arrays, float64, one expression per metric."""
    a = np.load(fa).astype(np.float64).ravel()
    b = np.load(fb).astype(np.float64).ravel()
    finite = np.isfinite(a) & np.isfinite(b)
    a, b = a[finite], b[finite]
    d = a - b
    nz = a != 0
    rel = np.abs(d[nz]) / np.abs(a[nz])
    pa = np.exp(a - a.max())
    pa /= pa.sum()
    pb = np.exp(b - b.max())
    pb /= pb.sum()
    keep = pa > 0
    absd, absa = np.abs(d), np.abs(a)
    return dict(
        sqnr_db=float(10 * np.log10(np.dot(a, a) / np.dot(d, d))),
        **{f'error_ratio_{t}': float(np.mean(absd > float(t) * absa)) for t in ('1e-3', '5e-3')},
        cosine_similarity=float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))),
        relative_euclidean_distance=float(np.linalg.norm(d) / np.linalg.norm(a)),
        max_absolute_error=float(np.abs(d).max()), mean_absolute_error=float(np.abs(d).mean()),
        root_mean_square_error=float(np.sqrt(np.mean(d ** 2))),
        max_relative_error=float(rel.max()), mean_relative_error=float(rel.mean()),
        accumulated_relative_error=float(rel.sum()),
        kl_divergence=float(np.sum(pa[keep] * np.log(pa[keep] / pb[keep]))),
        mean_a=float(a.mean()), std_a=float(a.std()), mean_b=float(b.mean()),
        std_b=float(b.std()))


def attribution_cost(root, setting='fp16', size=224, repeats=3):
    """Times the isolation of every module of mmpretrain's ResNet-18 (the shipped dump code).

    Returns dict(forward, dump, dump_isolated, isolation, extra_passes, calls).
    """
    import torch
    from mmpretrain.models import ResNet

    from ovkit.accuracy.capture import parse_setting
    from ovkit.accuracy.dump import dump_module, setting_context
    s = parse_setting(setting)
    torch.manual_seed(0)
    model = ResNet(depth=18)
    model.eval()  # (mmpretrain's ResNet.train returns None: no chaining)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad(), setting_context(s):
        model(x)  # warm-up: first-call allocations and kernel selection
    ref = dump_module(model, x, os.path.join(root, 'attr_fp32'), 'fp32', dump_inputs=True)
    forward = dump = isolated = math.inf
    for _ in range(repeats):  # interleaved, so all three see the same machine load
        t0 = time.perf_counter()
        with torch.no_grad(), setting_context(s):
            model(x)
        forward = min(forward, time.perf_counter() - t0)
        t0 = time.perf_counter()
        dump_module(model, x, os.path.join(root, 'attr_b'), s, overwrite=True)
        dump = min(dump, time.perf_counter() - t0)
        t0 = time.perf_counter()
        b = dump_module(model, x, os.path.join(root, 'attr_iso'), s, isolate_from=ref,
                        overwrite=True)
        isolated = min(isolated, time.perf_counter() - t0)
    iso = b.meta['isolation']
    return dict(forward=forward, dump=dump, dump_isolated=isolated, isolation=iso['seconds'],
                extra_passes=(isolated - dump) / forward, calls=iso['calls'],
                skipped=len(iso['skipped']), setting=s.name, size=size)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--gb', type=float, default=2.0, help='size of A + B in GB (2)')
    parser.add_argument('--quick', action='store_true',
                        help='tiny run (20 MB of dumps, 64-pixel input): checks, no figures')
    parser.add_argument('--setting', default='fp16', help='setting B of the attribution (fp16)')
    parser.add_argument('--size', type=int, default=224, help='attribution input size (224)')
    parser.add_argument('--no-attribution', action='store_true',
                        help='skip the attribution cost')
    parser.add_argument('--workers', type=int, default=None, help='default: all cores')
    parser.add_argument('--chunk', type=int, default=None, help='elements per chunk')
    parser.add_argument('--tmp', default=None, help='where to write the dumps (default: TMPDIR)')
    parser.add_argument('--keep', action='store_true', help='keep the dumps')
    args = parser.parse_args(argv)
    if args.quick:
        args.gb, args.size = 0.02, 64
    root = tempfile.mkdtemp(prefix='ovkit_bench_', dir=args.tmp)
    try:
        t0 = time.perf_counter()
        dir_a, dir_b, largest = make_dumps(root, args.gb,
                                           layout=QUICK_LAYOUT if args.quick else LAYOUT)
        entries_a, entries_b = load_dump(dir_a).entries, load_dump(dir_b).entries
        files = [(os.path.join(dir_a, ea.file), os.path.join(dir_b, eb.file))
                 for ea, eb in zip(entries_a, entries_b)]
        total = sum(os.path.getsize(f) for pair in files for f in pair)
        print(f'dumps: {total / 1e9:.2f} GB (A + B), {len(files)} pairs, largest tensor '
              f'{largest / 1e6:.0f} MB, written in {time.perf_counter() - t0:.1f}s to {root}')
        print(f'machine: {os.cpu_count()} cores, numpy {np.__version__}, python '
              f'{sys.version.split()[0]}')

        # the baseline twice: numpy's default BLAS threads, and one BLAS thread (faster when
        # the cores are busy); the ratio is against the faster, to stay conservative
        rss0 = status_kb('VmRSS') if reset_peak_rss() else None
        t0 = time.perf_counter()
        base = [baseline_pair(fa, fb) for fa, fb in files]
        t_threads = time.perf_counter() - t0
        base_peak = status_kb('VmHWM') - rss0 if rss0 is not None else math.nan
        t0 = time.perf_counter()
        with single_thread_blas():
            for fa, fb in files:
                baseline_pair(fa, fb)
        t_single = time.perf_counter() - t0
        t_base = min(t_threads, t_single)

        kwargs = dict(trace_memory=True)
        if args.chunk:
            kwargs['chunk'] = args.chunk
        runs = []
        for workers in ([1, args.workers] if args.workers != 1 else [1]):
            t0 = time.perf_counter()
            res = compare_dumps(dir_a, dir_b, workers=workers, **kwargs)
            runs.append((time.perf_counter() - t0, res))

        worst = 0.0
        for row, ref in zip(runs[-1][1].rows, base):
            for m in METRICS:
                scale = max(abs(ref[m]), 1e-12)
                worst = max(worst, abs(row[m] - ref[m]) / scale)
        gbs_base = total / t_base / 1e9
        for label, t in (('default BLAS threads', t_threads), ('1 BLAS thread', t_single)):
            tail = (f'peak RSS growth {base_peak / 1e3:.1f} MB' if label.startswith('default')
                    else '')
            print(f'{"baseline numpy, " + label + ":":42s}{t:7.2f}s {total / t / 1e9:6.3f} GB/s  '
                  f'{"(reference)" if t == t_base else "":11s}  {tail}')
        for t, res in runs:
            st = res.stats
            label = f'ovkit streaming, {st["workers"]} worker{"s" if st["workers"] > 1 else ""}:'
            print(f'{label:42s}{t:7.2f}s {total / t / 1e9:6.3f} GB/s  '
                  f'({total / t / 1e9 / gbs_base:.2f}x)  peak RSS growth per worker '
                  f'{st["worker_rss_growth_kb"] / 1e3:.1f} MB')
        ratios = ', '.join(f'{r.stats["workers"]} worker(s) {total / t / 1e9 / gbs_base:.2f}x'
                           for t, r in runs)
        print(f'speed-up over the baseline: {ratios}; load average {os.getloadavg()[0]:.1f} '
              f'(other processes take cores from the workers)')
        print(f'largest relative disagreement between the two implementations: {worst:.2e}')
        if not args.no_attribution:
            a = attribution_cost(root, args.setting, args.size, repeats=1 if args.quick else 3)
            print(f'attribution ({a["setting"]}, mmpretrain ResNet-18, {a["size"]} px, '
                  f'{a["calls"]} module calls, {a["skipped"]} not isolated): plain forward '
                  f'{a["forward"]:.3f}s, dump {a["dump"]:.3f}s, dump with isolation '
                  f'{a["dump_isolated"]:.3f}s -> the isolation adds {a["extra_passes"]:.2f} '
                  f'forward passes (its module calls and input reads: {a["isolation"]:.3f}s)')
        return 0 if worst < 1e-6 else 1
    finally:
        if args.keep:
            print(f'dumps kept in {root}')
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
