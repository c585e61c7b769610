"""``python tools/analysis/sgg_tde_effect.py [--seeds 0 1 2] [--nproc 2]``: Causal TDE's mR@50
against the same checkpoint's factual output on long-tailed shapes scene graphs; the logic
(and ``--help``) is in :mod:`ovkit.sgg.tde_effect`."""
from ovkit.sgg.tde_effect import main

if __name__ == '__main__':
    main()
