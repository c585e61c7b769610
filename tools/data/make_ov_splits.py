"""``python tools/data/make_ov_splits.py``: entry point; the logic (and ``--help``) is in
:mod:`ovkit.baron.ov_splits`."""
from ovkit.baron.ov_splits import main

if __name__ == '__main__':
    main()
