"""tests/conftest.py::run_cmd, the helper every end-to-end test launches commands with: on a
timeout it fails the test and kills the command's whole process group, so launcher workers do
not outlive it (and hold its pipes open), after a SIGTERM that lets a script's EXIT trap stop
the process groups it started itself."""
import os
import time

import pytest

from tests.conftest import run_cmd


def _alive(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            state = next(line for line in f if line.startswith('State:'))
    except FileNotFoundError:
        return False
    return 'Z' not in state.split()[1]  # a zombie is dead, only not yet reaped


def _assert_ends(pid, what):
    """Fail (and kill it) unless process ``pid`` is gone within 5 s."""
    for _ in range(50):
        if not _alive(pid):
            return
        time.sleep(0.1)
    os.kill(pid, 9)
    pytest.fail(f'{what} ({pid}) outlived the timeout')


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / 'pid'
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match='timed out after 1 s'):
        run_cmd(['bash', '-c', f'sleep 60 & echo $! > {pidfile}; wait'], cwd=tmp_path,
                timeout=1)
    assert time.monotonic() - t0 < 30  # the pipes did not keep it waiting for the child
    _assert_ends(int(pidfile.read_text()), 'the background child')


def test_timeout_lets_the_script_stop_its_own_process_groups(tmp_path):
    # a child in a session of its own is out of reach of the group kill; the script's EXIT
    # trap (run on SIGTERM) must stop it, as tools/demo.sh stops its two parts
    pidfile = tmp_path / 'pid'
    script = (f'setsid sleep 60 >/dev/null 2>&1 & echo $! > {pidfile}; '
              'trap "kill $! 2>/dev/null" EXIT; '
              'wait')
    with pytest.raises(pytest.fail.Exception, match='timed out after 1 s'):
        run_cmd(['bash', '-c', script], cwd=tmp_path, timeout=1)
    _assert_ends(int(pidfile.read_text()), 'the child in its own session')


def test_a_group_that_ignores_sigterm_is_killed(tmp_path, monkeypatch):
    # the SIGKILL after the grace period: here the script and its child ignore SIGTERM
    from tests import conftest
    monkeypatch.setattr(conftest, 'TERM_GRACE_S', 1)
    pidfile = tmp_path / 'pid'
    script = f"trap '' TERM; sleep 60 >/dev/null 2>&1 & echo $! > {pidfile}; wait"
    t0 = time.monotonic()
    with pytest.raises(pytest.fail.Exception, match='timed out after 1 s'):
        run_cmd(['bash', '-c', script], cwd=tmp_path, timeout=1)
    assert time.monotonic() - t0 < 30
    _assert_ends(int(pidfile.read_text()), 'the child that ignores SIGTERM')


def test_failure_reports_the_output(tmp_path):
    with pytest.raises(pytest.fail.Exception,
                       match=r'command failed \(3, expected 0\).*\n.*boom'):
        run_cmd(['bash', '-c', 'echo boom; exit 3'], cwd=tmp_path)
    assert run_cmd(['bash', '-c', 'echo boom; exit 3'], cwd=tmp_path, returncode=3) == 'boom\n'
    with pytest.raises(pytest.fail.Exception, match=r'command failed \(0, expected 3\)'):
        run_cmd(['bash', '-c', 'true'], cwd=tmp_path, returncode=3)
    assert run_cmd(['bash', '-c', 'echo ok'], cwd=tmp_path) == 'ok\n'
