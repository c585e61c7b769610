"""Generate the synthetic shapes data sets the tiny configs train on.

    python tools/data/make_shapes.py --out data/shapes [--kinds coco,imagefolder,vg150]
        [--seed 0] [--num-train 64] [--num-val 16] [--size 128]
        [--vg-num-train 160] [--vg-num-test 48] [--vg-predicate-mix default|longtail]

``--num-train/--num-val/--size`` shape the COCO detection set, ``--vg-num-*`` the VG150-format
scene graphs; every other kind has the defaults of its writer (:data:`ovkit.shapes.WRITERS`).
"""
import argparse
import time


def parse_args(argv=None):
    from ovkit.shapes import WRITERS
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data/shapes', help='output folder')
    parser.add_argument('--kinds', default=','.join(WRITERS),
                        help=f'comma-separated data sets to write (default: all: '
                        f'{",".join(WRITERS)})')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=64, help='COCO set: training images')
    parser.add_argument('--num-val', type=int, default=16, help='COCO set: validation images')
    parser.add_argument('--size', type=int, default=128, help='COCO set: image side in pixels')
    parser.add_argument('--vg-num-train', type=int, default=160,
                        help='VG150 set: images of the h5 train split (val is cut from it)')
    parser.add_argument('--vg-num-test', type=int, default=48,
                        help='VG150 set: images of the h5 test split')
    parser.add_argument('--vg-predicate-mix', default='default', choices=['default', 'longtail'],
                        help='VG150 set: predicate distribution (longtail: head/tail ~40x)')
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(',') if k.strip()]
    unknown = [k for k in args.kinds if k not in WRITERS]
    if unknown:
        parser.error(f'--kinds: unknown {unknown}; available: {", ".join(WRITERS)}')
    return args


def main(argv=None):
    from ovkit.shapes import make_shapes
    args = parse_args(argv)
    t0 = time.time()
    options = dict(coco=dict(num_train=args.num_train, num_val=args.num_val, size=args.size),
                   vg150=dict(num_train=args.vg_num_train, num_test=args.vg_num_test,
                              predicate_mix=args.vg_predicate_mix))
    written = make_shapes(args.out, args.seed, args.kinds, options)
    print(f'shapes data written to {args.out} in {time.time() - t0:.1f}s:')
    for kind, paths in written.items():
        for name, path in (paths or {}).items():
            print(f'  {kind}/{name}: {path}')
    return written
