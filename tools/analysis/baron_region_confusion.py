"""``python tools/analysis/baron_region_confusion.py CONFIG CHECKPOINT``: what a BARON detector
calls the ground-truth boxes and the empty background of its validation images; the logic (and
``--help``) is in :mod:`ovkit.baron.region_confusion`."""
from ovkit.baron.region_confusion import main

if __name__ == '__main__':
    main()
