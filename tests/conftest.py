import os
import os.path as osp
import signal
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


# Seconds between run_cmd's SIGTERM and SIGKILL of a timed-out command's process group.
TERM_GRACE_S = 15


def run_cmd(cmd, cwd, timeout=900, env=None, returncode=0):
    """Run a command the way a user would; return its stdout + stderr, or fail with them when
    it does not exit with ``returncode``. On a timeout its whole process group is stopped
    (launchers start workers that would outlive it): first SIGTERM, so that scripts' EXIT
    traps stop the process groups they started themselves (tools/demo.sh does), then, after
    ``TERM_GRACE_S``, SIGKILL. A ``timeout`` over pytest's own (900 s, pytest.ini) needs a
    ``pytest.mark.timeout`` above it, or pytest's fires first and skips this cleanup."""
    full_env = dict(os.environ, PYTHON=sys.executable, PYTHONUNBUFFERED='1')
    full_env.update(env or {})
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.communicate(timeout=TERM_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group is gone already
        stdout, stderr = proc.communicate()
        pytest.fail(f'command timed out after {timeout} s: {" ".join(map(str, cmd))}\n'
                    f'{(stdout + stderr)[-6000:]}')
    out = stdout + stderr
    if proc.returncode != returncode:
        pytest.fail(f'command failed ({proc.returncode}, expected {returncode}): '
                    f'{" ".join(map(str, cmd))}\n{out[-6000:]}')
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


@pytest.fixture(autouse=True)
def _loggers_write_to_open_streams():
    """Point logging handlers left on a closed stream back at the live one.

    mmengine's loggers are process-wide singletons: one created while an earlier test's output
    was captured keeps that capture's stream, closed afterwards, and every later record then
    prints a '--- Logging error ---' traceback into the running test's stderr.
    """
    import logging
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    mmengine_logging = sys.modules.get('mmengine.logging')
    if mmengine_logging is not None:  # MMLogger instances live outside logging's registry
        loggers += list(mmengine_logging.MMLogger._instance_dict.values())
    for logger in loggers:
        for handler in logger.handlers:
            stream = getattr(handler, 'stream', None)
            if (isinstance(handler, logging.StreamHandler)
                    and not isinstance(handler, logging.FileHandler)
                    and getattr(stream, 'closed', False)):
                handler.stream = sys.stdout  # setStream would flush the closed one
    yield


def experiment_name(prefix):
    """A Runner's ``experiment_name`` no other Runner of this process has. mmengine names the
    Runner's logger and Visualizer singletons by it (by default the timestamp, to the second),
    so a Runner made in the same second as an earlier test's would write into that test's
    folder."""
    import uuid
    return f'{prefix}_{uuid.uuid4().hex[:8]}'


def in_default_scope(scope):
    """An autouse fixture body for a family's tests: run each test under its host's default
    scope. mmengine keeps the default scope process-wide, so a test of another host (or a
    Runner) left earlier in the session would otherwise make ``mmdet.registry.MODELS.build``
    look in, e.g., mmaction's registry."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope(scope):
        yield
