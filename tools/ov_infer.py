"""``python tools/ov_infer.py``: entry point; the logic (and ``--help``) is in
:mod:`ovkit.baron.ov_infer`."""
from ovkit.baron.ov_infer import main

if __name__ == '__main__':
    main()
