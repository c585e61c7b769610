"""Generate the synthetic shapes datasets the tiny configs train on.

    python tools/data/make_shapes.py --out data/shapes [--seed 0] [--num-train 64]
"""
import argparse
import time

from ovkit.shapes import make_shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data/shapes', help='output folder')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-train', type=int, default=64)
    parser.add_argument('--num-val', type=int, default=16)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    args = parser.parse_args()
    t0 = time.time()
    paths = make_shapes(args.out, args.seed, args.num_train, args.num_val, args.size)
    print(f'shapes data written to {args.out} in {time.time() - t0:.1f}s:')
    for split, path in paths.items():
        print(f'  {split}: {path}')


if __name__ == '__main__':
    main()
