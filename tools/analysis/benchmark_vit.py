"""Forward+backward speed of ovkit's ViT against timm's, same weights, in one process.

Times ovkit's shipped model (an mmpretrain ImageClassifier built from the registry with
OVKitViT + OVKitViTClsHead) and timm's ``vit_*`` with the very same weights, eager and
``torch.compile``, alternating the two sides round by round so machine load hits both alike.
Achieved TFLOP/s (3x the forward matmul FLOPs per image) is printed as a fraction of a large
matmul's on the same machine. ``--quick``: a tiny model, a few iterations, eager only; checks
that both sides compute the same logits and gradients.

    python tools/analysis/benchmark_vit.py                 # ViT-B/16, batch 8 CPU / 64 GPU
    python tools/analysis/benchmark_vit.py --quick
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

VARIANTS = {  # name -> (timm model, ovkit arch, patch)
    'B/16': ('vit_base_patch16_224', 'base', 16),
    'B/32': ('vit_base_patch32_224', 'base', 32),
    'L/16': ('vit_large_patch16_224', 'large', 16),
    'S/16': ('vit_small_patch16_224', 'small', 16),
    'Ti/16': ('vit_tiny_patch16_224', 'tiny', 16),
}


def build_pair(variant, img_size, num_classes, device, quick):
    """timm's model and ovkit's classifier holding the same weights."""
    import timm
    from mmpretrain.registry import MODELS

    import ovkit.vit  # noqa: F401  (registers OVKitViT)
    from ovkit.vit import timm_to_ovkit
    if quick:
        from timm.models.vision_transformer import VisionTransformer
        ref = VisionTransformer(img_size=img_size, patch_size=16, embed_dim=64, depth=2,
                                num_heads=4, num_classes=num_classes)
        arch, patch = dict(embed_dim=64, depth=2, num_heads=4), 16
    else:
        name, arch, patch = VARIANTS[variant]
        ref = timm.create_model(name, pretrained=False, num_classes=num_classes,
                                img_size=img_size)
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


def check_same_numbers(ref, ours, x, y):
    """Max |difference| of logits and of all gradients (both sides in train mode)."""
    ref_out, our_out = ref(x), ours(x, mode='tensor')
    F.cross_entropy(ref_out, y).backward()
    F.cross_entropy(our_out, y).backward()
    from ovkit.vit import timm_to_ovkit
    ref_grads = timm_to_ovkit({n: p.grad for n, p in ref.named_parameters()})
    grad_diff = max((p.grad - ref_grads[n]).abs().max().item()
                    for n, p in ours.named_parameters())
    for m in (ref, ours):
        m.zero_grad(set_to_none=True)
    return (ref_out - our_out).abs().max().item(), grad_diff


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--variant', default='B/16', choices=sorted(VARIANTS))
    parser.add_argument('--batch', type=int, default=None, help='default 8 on CPU, 64 on GPU')
    parser.add_argument('--img-size', type=int, default=224)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--amp', action='store_true', help='bf16 autocast (GPU)')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--iters', type=int, default=2)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--no-compile', action='store_true', help='eager only')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--quick', action='store_true',
                        help='tiny model, few iterations, eager only (used by the tests)')
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.quick:
        args.img_size, args.rounds, args.iters, args.warmup = 32, 2, 1, 1
        args.no_compile = True
        args.threads = args.threads or 1  # tiny tensors: thread hand-offs cost more than they save
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (64 if device.type == 'cuda' else 8)
    torch.manual_seed(0)
    ref, ours = build_pair(args.variant, args.img_size, 1000, device, args.quick)
    x = torch.randn(batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 1000, (batch, ), device=device)
    logit_diff, grad_diff = check_same_numbers(ref, ours, x, y)
    name = 'tiny (quick)' if args.quick else f'ViT-{args.variant}'
    print(f'{name} fwd+bwd, batch {batch}, {args.img_size}px, {device.type}, '
          f'{"bf16 autocast" if args.amp else "fp32"}, torch {torch.__version__}, '
          f'{torch.get_num_threads()} threads')
    print(f'same numbers: max|logits diff| = {logit_diff:.3g}, max|grad diff| = {grad_diff:.3g}')

    from ovkit.vit import vit_flops
    flops = 3 * vit_flops(ours.backbone, batch, 1000)  # backward ~ 2x forward
    peak = matmul_tflops(device, args.amp, n=512 if args.quick else None)
    modes = [('eager', ref, ours)]
    if not args.no_compile:
        modes.append(('compile', torch.compile(ref), torch.compile(ours)))
    results = {}
    print(f'{"side":6} {"mode":8} {"img/s":>8} {"ms/iter":>8} {"TFLOP/s":>8} {"of matmul":>9}')
    for mode, r, o in modes:
        t_ref, t_ours = time_rounds(
            [lambda: step(r, x, y, False, args.amp), lambda: step(o, x, y, True, args.amp)],
            device, args.rounds, args.iters, args.warmup)
        for side, sec in (('timm', t_ref), ('ovkit', t_ours)):
            tflops = flops / sec / 1e12
            results[(side, mode)] = batch / sec
            print(f'{side:6} {mode:8} {batch / sec:8.2f} {sec * 1e3:8.1f} {tflops:8.3f} '
                  f'{tflops / peak:9.1%}')
        print(f'ratio ovkit/timm ({mode}): {t_ref / t_ours:.3f}x')
    print(f'large matmul: {peak:.3f} TFLOP/s')
    return dict(results=results, logit_diff=logit_diff, grad_diff=grad_diff, peak=peak)


if __name__ == '__main__':
    main()
