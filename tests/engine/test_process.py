"""Worker life cycle: workers die with their launcher; gloo workers exit without the abort."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not sys.platform.startswith('linux'),
                                reason='prctl(PR_SET_PDEATHSIG) and /proc are Linux only')

_WORKER = r'''
import sys, time
sys.path.insert(0, {repo!r})
from ovkit.engine.process import set_parent_death_signal
if sys.argv[1] == '1':
    set_parent_death_signal()
print('ready', flush=True)
time.sleep(120)
'''

_LAUNCHER = r'''
import os, subprocess, sys
worker = subprocess.Popen([sys.executable, '-c', sys.argv[1], sys.argv[2]],
                          env=dict(os.environ, LOCAL_RANK='0'))
print(worker.pid, flush=True)
worker.wait()
'''


def _alive(pid):
    try:
        with open(f'/proc/{pid}/status') as f:
            return 'State:\tZ' not in f.read()
    except FileNotFoundError:
        return False


def _orphan_after_launcher_kill(pdeathsig):
    launcher = subprocess.Popen(
        [sys.executable, '-c', _LAUNCHER, _WORKER.format(repo=REPO), '1' if pdeathsig else '0'],
        stdout=subprocess.PIPE, text=True)
    worker = int(launcher.stdout.readline())
    assert launcher.stdout.readline().strip() == 'ready'
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=30)
    deadline = time.time() + 20
    while _alive(worker) and time.time() < deadline:
        time.sleep(0.2)
    survived = _alive(worker)
    if survived:
        os.kill(worker, signal.SIGKILL)
    return survived


def test_worker_dies_with_its_launcher():
    assert not _orphan_after_launcher_kill(pdeathsig=True)


def test_without_the_signal_the_worker_is_orphaned():
    """The control: what torchrun workers did before (they kept writing checkpoints)."""
    assert _orphan_after_launcher_kill(pdeathsig=False)


def test_worker_whose_launcher_already_died_ends_itself():
    code = ('import sys; sys.path.insert(0, %r)\n'
            'from ovkit.engine.process import set_parent_death_signal\n'
            'set_parent_death_signal(); print("alive")' % REPO)
    for launcher, expected in ((os.getpid(), 0), (os.getpid() + 10 ** 6, -signal.SIGKILL)):
        proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                              env=dict(os.environ, OVKIT_LAUNCHER_PID=str(launcher)))
        assert proc.returncode == expected, proc.stderr[-2000:]


_DIST = r'''
import atexit, os, sys
sys.path.insert(0, {repo!r})
import torch
from ovkit.engine import process

# Registered before ovkit's teardown, so it runs after it (atexit is last in, first out).
atexit.register(lambda: print(f'rank {{os.environ["RANK"]}} gloo threads at exit: '
                              f'{{process.gloo_worker_threads()}}', flush=True))
from mmengine.dist import init_dist
init_dist('pytorch', backend='gloo')  # ovkit.compat's CPU launcher patch

def train():
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))
    model(torch.randn(2, 4)).sum().backward()
    torch.distributed.all_gather_object([None, None], dict(done=True))
    torch.distributed.barrier()
    print(f'gloo threads while running: {{process.gloo_worker_threads()}}', flush=True)

train()
'''


def test_gloo_threads_are_joined_before_the_interpreter_exits(tmp_path):
    """The exit abort ('terminate called without an active exception') needs a gloo worker
    thread alive during interpreter finalisation; ovkit joins them at exit."""
    script = tmp_path / 'dist.py'
    script.write_text(_DIST.format(repo=REPO))
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    proc = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
         '--master_port', str(port), str(script)],
        capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=REPO))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count('gloo threads while running: 2') == 2, out[-3000:]
    for rank in (0, 1):
        assert f'rank {rank} gloo threads at exit: 0' in out, out[-3000:]


_PIN = r"""
import gc, socket, sys
sys.path.insert(0, {repo!r})
import torch
import torch.distributed as dist
if {ovkit}:
    from ovkit.engine import process
    process.before_init_process_group()
with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{{port}}', rank=0, world_size=1)
import torch._dynamo  # what DDP's constructor imports
dist.destroy_process_group()
gc.collect()
from ovkit.engine.process import gloo_worker_threads
print('threads after destroy:', gloo_worker_threads())
"""


@pytest.mark.parametrize('ovkit_first,threads', [(True, 0), (False, 2)])
def test_default_group_is_not_pinned_by_torch_distributed_nn(ovkit_first, threads):
    """torch.distributed.nn.functional's ``group=group.WORLD`` defaults keep the default
    group alive when that module is imported after init (DDP imports it through
    torch._dynamo), so destroy_process_group() cannot join gloo's threads; ovkit imports it
    before init. The control (torch alone) shows the pinned group."""
    proc = subprocess.run([sys.executable, '-c', _PIN.format(repo=REPO, ovkit=ovkit_first)],
                          capture_output=True, text=True, timeout=300)
    assert f'threads after destroy: {threads}' in proc.stdout, proc.stderr[-2000:]


_EXIT = r"""
import atexit, os, sys
sys.path.insert(0, {repo!r})
import torch
from ovkit.engine import process
if not {teardown}:
    process.after_init_process_group = lambda: None
atexit.register(lambda: print('threads at exit:', process.gloo_worker_threads(), flush=True))
from mmengine.dist import init_dist
init_dist('pytorch', backend='gloo')


def train():
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))
    model(torch.randn(2, 4)).sum().backward()


train()
"""


@pytest.mark.parametrize('teardown,threads', [(True, 0), (False, 2)])
def test_process_group_destroyed_at_exit(teardown, threads):
    """Without the teardown torch leaves the group to interpreter finalisation, where a gloo
    thread that still needs the GIL aborts the process."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK='0',
               LOCAL_RANK='0', WORLD_SIZE='1', OMP_NUM_THREADS='1')
    proc = subprocess.run([sys.executable, '-c', _EXIT.format(repo=REPO, teardown=teardown)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert f'threads at exit: {threads}' in proc.stdout, proc.stderr[-2000:]
