"""Forward+backward speed of ovkit's ViT against timm's, same weights, in one process.

Times ovkit's shipped model (an mmpretrain ImageClassifier built from the registry with
OVKitViT + OVKitViTClsHead) and timm's ``vit_*`` with the very same weights, eager and
``torch.compile``, alternating the two sides round by round so machine load hits both alike.
Achieved TFLOP/s (3x the forward matmul FLOPs per image) is printed as a fraction of a large
matmul's on the same machine. Both sides are first checked to compute the same logits and
gradients (eager, and compiled against eager).

    python tools/analysis/benchmark_vit.py                 # ViT-B/16 eager + compile, batch 8
                                                           # CPU / 64 GPU (--amp: bf16)
    python tools/analysis/benchmark_vit.py --variant all   # every variant in VARIANTS
    python tools/analysis/benchmark_vit.py --quick --variant all

``--quick`` (the test): each variant's timm model and patch size at a tiny width and depth,
a few iterations, ``torch.compile`` with the ``eager`` backend (dynamo captures both models
and the compiled path runs, without the minutes inductor's C++ build takes on a CPU) for
B/16 only: the variants differ in width, depth and patch, which the eager checks cover, and
capturing fourteen models would triple the test's time.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

VARIANTS = {  # name -> (timm model, ovkit arch, patch): every ARCHS entry, both B and L patches
    'Ti/16': ('vit_tiny_patch16_224', 'tiny', 16),
    'S/16': ('vit_small_patch16_224', 'small', 16),
    'B/16': ('vit_base_patch16_224', 'base', 16),
    'B/32': ('vit_base_patch32_224', 'base', 32),
    'L/16': ('vit_large_patch16_224', 'large', 16),
    'L/32': ('vit_large_patch32_224', 'large', 32),
    'H/14': ('vit_huge_patch14_224', 'huge', 14),
}
QUICK_ARCH = dict(embed_dim=64, depth=2, num_heads=4)
QUICK_COMPILED = 'B/16'  # the variant whose compiled path --quick checks


def build_pair(variant, img_size, num_classes, device, quick):
    """timm's model and ovkit's classifier holding the same weights.

    Args:
        variant: a key of VARIANTS.
        img_size: input side.
        num_classes: classifier width.
        device: torch device.
        quick: the variant's timm model and patch at QUICK_ARCH's width and depth.
    """
    import timm
    from mmpretrain.registry import MODELS

    import ovkit.vit  # noqa: F401  (registers OVKitViT)
    from ovkit.vit import timm_to_ovkit
    name, arch, patch = VARIANTS[variant]
    if quick:
        arch = QUICK_ARCH
    ref = timm.create_model(name, pretrained=False, num_classes=num_classes, img_size=img_size,
                            **(QUICK_ARCH if quick else {}))
    ours = MODELS.build(dict(
        type='ImageClassifier',
        backbone=dict(type='OVKitViT', arch=arch, patch_size=patch, img_size=img_size),
        head=dict(type='OVKitViTClsHead', num_classes=num_classes,
                  in_channels=ref.embed_dim)))
    ours.load_state_dict(timm_to_ovkit(ref.state_dict()), strict=True)
    return ref.to(device).train(), ours.to(device).train()


def forward(model, x, is_ovkit):
    return model(x, mode='tensor') if is_ovkit else model(x)


def step(model, x, y, is_ovkit, amp):
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        loss = F.cross_entropy(forward(model, x, is_ovkit).float(), y)
    loss.backward()
    for p in model.parameters():
        p.grad = None


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def time_rounds(fns, device, rounds, iters, warmup):
    """Median seconds per iteration of each fn, rounds interleaved across fns."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    sync(device)
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            sync(device)
            times[i].append((time.perf_counter() - t0) / iters)
    return [statistics.median(t) for t in times]


def matmul_tflops(device, amp, n=None, iters=10):
    """TFLOP/s of a large square matmul in the dtype the models run in."""
    n = n or (8192 if device.type == 'cuda' else 2048)
    dtype = torch.bfloat16 if amp else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    (sec, ) = time_rounds([lambda: a @ b], device, rounds=3, iters=iters, warmup=2)
    return 2 * n**3 / sec / 1e12


def full_size_keys_match(variant):
    """The variant's full-size timm model and ovkit backbone have the same tensor names and
    shapes (meta tensors: no memory, no time), so the quick run's mapping holds at full size."""
    import timm

    from ovkit.vit import OVKitViT
    name, arch, patch = VARIANTS[variant]
    with torch.device('meta'):
        ref = timm.create_model(name, pretrained=False)
        ours = OVKitViT(arch=arch, patch_size=patch)
    expected = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith('head.')}
    return {k: v.shape for k, v in ours.state_dict().items()} == expected, len(expected)


def logits_and_grads(model, x, y, is_ovkit):
    """Logits and {timm name: gradient} of one cross-entropy step (gradients cleared after)."""
    from ovkit.vit.weights import ovkit_to_timm
    out = forward(model, x, is_ovkit)
    F.cross_entropy(out.float(), y).backward()
    params = getattr(model, '_orig_mod', model).named_parameters()
    grads = {n: p.grad.clone() for n, p in params}
    model.zero_grad(set_to_none=True)
    return out.detach(), (ovkit_to_timm(grads) if is_ovkit else grads)


def max_diff(a, b):
    """Max |difference| of logits and of all gradients of two logits_and_grads results."""
    (out_a, g_a), (out_b, g_b) = a, b
    assert set(g_a) == set(g_b), 'the two sides have different parameters'
    return ((out_a - out_b).abs().max().item(),
            max((g_a[n] - g_b[n]).abs().max().item() for n in g_a))


def run_variant(variant, args, device):
    """Check and time one variant; print its lines and return its figures."""
    batch = args.batch or (64 if device.type == 'cuda' else 8)
    img_size = 2 * VARIANTS[variant][2] if args.quick else args.img_size
    torch.manual_seed(0)
    ref, ours = build_pair(variant, img_size, 1000, device, args.quick)
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    y = torch.randint(0, 1000, (batch, ), device=device)
    eager = (logits_and_grads(ref, x, y, False), logits_and_grads(ours, x, y, True))
    logit_diff, grad_diff = max_diff(*eager)
    name = f'ViT-{variant}' + (' (quick: tiny width/depth)' if args.quick else '')
    print(f'{name} fwd+bwd, batch {batch}, {img_size}px, {device.type}, '
          f'{"bf16 autocast" if args.amp else "fp32"}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads')
    print(f'same numbers: max|logits diff| = {logit_diff:.3g}, max|grad diff| = {grad_diff:.3g}')
    if args.quick:
        same, n = full_size_keys_match(variant)
        print(f'full-size {VARIANTS[variant][0]}: {n} tensors, names and shapes '
              f'{"match" if same else "DIFFER"}')

    from ovkit.vit import vit_flops
    flops = 3 * vit_flops(ours.backbone, batch, 1000)  # backward ~ 2x forward
    modes = [('eager', ref, ours)]
    if args.quick and not args.no_compile and variant != QUICK_COMPILED:
        print(f'compile: not run (--quick captures {QUICK_COMPILED} only)')
    elif not args.no_compile:
        backend = args.compile_backend
        compiled = (torch.compile(ref, backend=backend), torch.compile(ours, backend=backend))
        # the compiled models against eager (inductor fuses: differences of float rounding)
        diffs = [max_diff(e, logits_and_grads(c, x, y, o))
                 for e, c, o in zip(eager, compiled, (False, True))]
        print(f'compiled ({backend}) vs eager: timm max|logits diff| = {diffs[0][0]:.3g}, '
              f'max|grad diff| = {diffs[0][1]:.3g}; ovkit max|logits diff| = '
              f'{diffs[1][0]:.3g}, max|grad diff| = {diffs[1][1]:.3g}')
        modes.append(('compile', *compiled))
    figures = {}
    print(f'{"side":6} {"mode":8} {"img/s":>8} {"ms/iter":>8} {"TFLOP/s":>8} {"of matmul":>9}')
    for mode, r, o in modes:
        t_ref, t_ours = time_rounds(
            [lambda: step(r, x, y, False, args.amp), lambda: step(o, x, y, True, args.amp)],
            device, args.rounds, args.iters, args.warmup)
        for side, sec in (('timm', t_ref), ('ovkit', t_ours)):
            tflops = flops / sec / 1e12
            figures[(side, mode)] = batch / sec
            print(f'{side:6} {mode:8} {batch / sec:8.2f} {sec * 1e3:8.1f} {tflops:8.3f} '
                  f'{tflops / args.peak:9.1%}')
        figures[('ratio', mode)] = t_ref / t_ours
        print(f'ratio ovkit/timm ({mode}): {t_ref / t_ours:.3f}x')
    return dict(figures=figures, logit_diff=logit_diff, grad_diff=grad_diff)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variant', default='B/16', choices=[*VARIANTS, 'all'],
                        help="one of VARIANTS or 'all'")
    parser.add_argument('--batch', type=int, default=None, help='default 8 on CPU, 64 on GPU')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast (GPU)')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--iters', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--no-compile', action='store_true', help='eager only')
    parser.add_argument('--compile-backend', default=None,
                        help="torch.compile backend (default 'inductor'; --quick: 'eager')")
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--quick', action='store_true',
                        help='tiny width/depth, few iterations, compile backend eager (the test)')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        args.rounds, args.iters, args.warmup = 2, 1, 1
        args.threads = args.threads or 1  # tiny tensors: thread hand-offs cost more than they save
    args.compile_backend = args.compile_backend or ('eager' if args.quick else 'inductor')
    if args.threads:
        torch.set_num_threads(args.threads)
    args.peak = matmul_tflops(device, args.amp, n=512 if args.quick else None)
    variants = list(VARIANTS) if args.variant == 'all' else [args.variant]
    results = {}
    for variant in variants:
        results[variant] = run_variant(variant, args, device)
        print()
    print(f'large matmul: {args.peak:.3f} TFLOP/s')
    if len(variants) > 1:
        modes = ['eager'] + ([] if args.no_compile else ['compile'])
        print('variant  ' + '  '.join(f'{f"{s} {m}":>14}' for m in modes
                                       for s in ('timm', 'ovkit', 'ratio')))
        for v, r in results.items():
            print(f'{v:8} ' + '  '.join(
                f'{r["figures"][(s, m)]:14.3f}' if (s, m) in r['figures'] else f'{"-":>14}'
                for m in modes for s in ('timm', 'ovkit', 'ratio')))
    return dict(results=results, peak=args.peak)


if __name__ == '__main__':
    main()
