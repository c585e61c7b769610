"""``python tools/data/train_shapes_clip.py``: entry point; the logic (and ``--help``) is in
:mod:`ovkit.clip.shapes_clip`."""
from ovkit.clip.shapes_clip import main

if __name__ == '__main__':
    main()
