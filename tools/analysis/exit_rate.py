"""Exit codes of N finished multi-process trainings, with or without ovkit's exit teardown:
``python tools/analysis/exit_rate.py CONFIG --runs 50 [--without-teardown]``.
See ovkit.engine.exit_rate."""
import sys

from ovkit.engine.exit_rate import main

if __name__ == '__main__':
    sys.exit(main())
