"""``python tools/test.py``: entry point; the logic (and ``--help``) is in
:mod:`ovkit.tools.test`."""
from ovkit.tools.test import main

if __name__ == '__main__':
    main()
