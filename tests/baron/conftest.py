import sys

import pytest

from tests.conftest import REPO, run_cmd

# A few seconds of the real shapes-CLIP trainer: the files configs/baron/shapes.py reads, made
# the way a user makes them (docs/baron.md), only with a much shorter schedule.
QUICK_CLIP = ['--steps', '20', '--batch-size', '32', '--num-crops', '256', '--warmup', '5',
              '--eval-crops', '32', '--threads', '1']


@pytest.fixture(scope='session')
def baron_workspace(shapes_workspace):
    """``shapes_workspace`` plus ``data/shapes/clip/shapes_clip_seed0.pth`` (the shapes CLIP,
    quickly trained) and ``data/shapes/baron/shapes_clip.npy`` (class embeddings from it)."""
    ws = shapes_workspace
    run_cmd([sys.executable, f'{REPO}/tools/data/train_shapes_clip.py',
             '--out-dir', 'data/shapes/clip', '--seed', '0', *QUICK_CLIP], cwd=ws)
    run_cmd([sys.executable, f'{REPO}/tools/data/gen_class_embeddings.py', '--model-name', 'tiny',
             '--clip-checkpoint', 'data/shapes/clip/shapes_clip_seed0.pth',
             '--classes', 'data/shapes/classes.txt', '--out', 'data/shapes/baron/shapes_clip.npy',
             '--device', 'cpu'], cwd=ws)
    return ws
