"""Exit 0 if the filesystem holding PATH has at least GIB GiB free, else say so and exit 1.

    python check_disk.py PATH GIB [WHAT]

Why: the torch/torchvision pair alone is about 5.6 GB in a venv, and pip's "[Errno 28] No space
left on device" comes after minutes of copying and names neither the folder nor the need.
PATH may not exist yet (a new venv): its nearest existing parent is measured.
"""
import os
import shutil
import sys


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    path = argv[0]
    try:
        need = float(argv[1])
    except ValueError:
        print(f'[ovkit] the disk space needed must be a number of GiB (OVKIT_NEED_GIB), got '
              f'{argv[1]!r}', file=sys.stderr)
        return 2
    what = argv[2] if len(argv) == 3 else 'this install'
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free / 2**30
    if free < need:
        print(f'[ovkit] not enough disk space for {what}: {free:.1f} GiB free on the filesystem '
              f'of {probe}, {need:g} GiB needed. Free some space there, or set VENV to a '
              'folder on a larger disk (OVKIT_NEED_GIB=N sets the need, if you know better).',
              file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
