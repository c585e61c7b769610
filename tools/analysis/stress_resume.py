"""Kill training at random moments, resume, and count loadable checkpoints and bit-identical
final weights: ``python tools/analysis/stress_resume.py [CONFIG] [--nproc 2] [--rounds 10]``.
See ovkit.engine.stress."""
import os.path as osp

from ovkit.engine.stress import main

if __name__ == '__main__':
    # The launchers this loop kills are this script's siblings.
    main(tools=osp.dirname(osp.dirname(osp.abspath(__file__))))
