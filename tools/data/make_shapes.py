"""``python tools/data/make_shapes.py``: entry point; the logic (and ``--help``) is in
:mod:`ovkit.tools.make_shapes`."""
from ovkit.tools.make_shapes import main

if __name__ == '__main__':
    main()
