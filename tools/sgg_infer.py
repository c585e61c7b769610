"""``python tools/sgg_infer.py CONFIG CKPT IMAGES_DIR_OR_LIST --out DIR``: entry point; the
logic (and ``--help``) is in :mod:`ovkit.sgg.infer`."""
from ovkit.sgg.infer import main

if __name__ == '__main__':
    main()
