import os
import os.path as osp
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_cmd(cmd, cwd, timeout=900, env=None):
    """Run a command the way a user would; fail with its output when it fails."""
    full_env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    full_env.update(env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f'command failed ({proc.returncode}): {" ".join(map(str, cmd))}\n{out[-6000:]}')
    return out


@pytest.fixture(scope='session')
def repo():
    return REPO


@pytest.fixture(scope='session')
def shapes_workspace(tmp_path_factory):
    """A working folder holding data/shapes, as a user's checkout would after make_shapes."""
    from ovkit.shapes import make_shapes
    ws = tmp_path_factory.mktemp('ws')
    make_shapes(str(ws / 'data' / 'shapes'), seed=0, kinds=['coco'])
    return ws
