"""How long `import ovkit` and each family take, beside the host imports they build on.

    python tools/analysis/benchmark_import.py [--repeat 3]

Each import runs in a fresh interpreter (best of --repeat). `import ovkit` promises to be light
(no torch, no OpenMMLab package): its line should stay near the bare interpreter's, while a
family costs about what its host costs (`import mmdet.models` for BARON and SGG, ...).
"""
import argparse
import subprocess
import sys
import time

CASES = [
    ('python (bare interpreter)', 'pass'),
    ('import ovkit', 'import ovkit'),
    ('import torch (peer)', 'import torch'),
    ('import mmdet.models (host)', 'import ovkit, mmdet.models'),
    ('import ovkit.baron', 'import ovkit.baron'),
    ('import ovkit.sgg', 'import ovkit.sgg'),
    ('import mmaction.models (host)', 'import ovkit, mmaction.models'),
    ('import ovkit.pptsm', 'import ovkit.pptsm'),
    ('import mmpretrain.models (host)', 'import mmpretrain.models'),
    ('import ovkit.vit', 'import ovkit.vit'),
    ('import ovkit.accuracy', 'import ovkit.accuracy'),
]


def time_import(code, repeat):
    best = float('inf')
    for _ in range(repeat):
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            return None, proc.stderr.strip().splitlines()[-1]
        best = min(best, elapsed)
    return best, ''


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args(argv)
    bare = None
    print(f'{"what":36s} {"seconds":>8s} {"over bare":>10s}')
    for name, code in CASES:
        seconds, err = time_import(code, args.repeat)
        if seconds is None:
            print(f'{name:36s} {"failed":>8s}  {err}')
            continue
        bare = seconds if bare is None else bare
        print(f'{name:36s} {seconds:8.3f} {seconds - bare:10.3f}')


if __name__ == '__main__':
    main()
