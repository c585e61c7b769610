"""``python tools/train.py``: entry point; the logic (and ``--help``) is in
:mod:`ovkit.tools.train`."""
from ovkit.tools.train import main

if __name__ == '__main__':
    main()
