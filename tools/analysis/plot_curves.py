"""``python tools/analysis/plot_curves.py WORK_DIR [WORK_DIR...]``: entry point; the logic (and
``--help``) is in :mod:`ovkit.tools.plot_curves`."""
from ovkit.tools.plot_curves import main

if __name__ == '__main__':
    main()
