"""``python tools/predict.py CONFIG CKPT IMAGE [IMAGES...]``: entry point; the logic (and
``--help``) is in :mod:`ovkit.vit.predict`."""
from ovkit.vit.predict import main

if __name__ == '__main__':
    main()
