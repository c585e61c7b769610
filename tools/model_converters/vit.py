"""``python tools/model_converters/vit.py SRC DST``: entry point; the logic (and ``--help``) is
in :mod:`ovkit.vit.convert`."""
from ovkit.vit.convert import main

if __name__ == '__main__':
    main()
