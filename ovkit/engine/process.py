"""Life cycle of launched worker processes: die with the launcher, exit cleanly.

Written by hand because neither torch 2.14 nor mmengine 0.10.7 does either:

* **Parent-death signal.** torchrun starts each worker in a process group of its own, so a
  SIGKILLed launcher (``tools/dist_train.sh``) leaves its workers training and writing
  checkpoints. A worker (``LOCAL_RANK`` set) asks Linux for SIGKILL when its parent dies.
* **Clean exit of gloo runs.** A gloo worker thread drops its last reference to a finished
  collective (and to the tensors Python created for it) a moment *after* waking the caller.
  When the main thread reaches interpreter finalisation first, that thread has to take the GIL
  to free a tensor's Python object, CPython ends the thread with ``pthread_exit`` inside a
  ``noexcept`` destructor, and libstdc++ aborts: ``terminate called without an active
  exception``, SIGABRT, exit 1 (about 1 run in 12 on a loaded machine). Destroying the
  process group while the interpreter is alive joins those threads; torch does not do it at
  exit, and ``destroy_process_group()`` alone did not help because the default group is
  pinned by the default arguments of ``torch.distributed.nn.functional`` (``group=
  group.WORLD``, evaluated when that module is imported, which DDP's constructor triggers by
  importing ``torch._dynamo`` after ``init_process_group``). :func:`before_init_process_group`
  imports it first; :func:`after_init_process_group` registers the teardown.
"""
import atexit
import ctypes
import gc
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_TEARDOWN_REGISTERED = False


def set_parent_death_signal(sig=signal.SIGKILL):
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    Args:
        sig: the signal to receive; SIGKILL because a worker that outlives its launcher must
            not keep writing into the work dir whatever handlers the user installed.

    Returns:
        bool: whether the signal was set.
    """
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    # The launcher may have died before prctl: then we were re-parented already. Only our
    # own launcher says who the parent should be (PID 1 can be a container's torchrun).
    launcher = os.environ.get('OVKIT_LAUNCHER_PID', '')
    if launcher.isdigit() and os.getppid() != int(launcher):
        os.kill(os.getpid(), sig)
    return True


def is_launched_worker():
    """Whether this process was started by a launcher (torchrun / torch.distributed.launch)."""
    return 'LOCAL_RANK' in os.environ


def before_init_process_group():
    """Call right before ``init_process_group`` in a worker: die with the launcher, and
    import ``torch.distributed.nn.functional`` while no default group exists so that its
    ``group=group.WORLD`` defaults stay ``None`` instead of pinning the group until exit."""
    if is_launched_worker():
        set_parent_death_signal()
    import torch.distributed.nn.functional  # noqa: F401


def after_init_process_group():
    """Call right after ``init_process_group``: destroy the process groups at exit."""
    global _TEARDOWN_REGISTERED
    if not _TEARDOWN_REGISTERED:
        _TEARDOWN_REGISTERED = True
        atexit.register(teardown_process_group)


def _exiting_on_error():
    # CPython's top-level error printer sets sys.last_value before the atexit handlers run.
    return getattr(sys, 'last_value', None) is not None


def teardown_process_group(force=False):
    """Destroy every process group while the interpreter is alive, joining gloo's threads.

    Skipped after an uncaught exception: the process is failing anyway, and a peer may still
    be inside a collective this process will never join, which a destructor would wait for.

    Args:
        force: tear down even when the process is exiting on an uncaught exception.

    Returns:
        bool: whether the process groups were destroyed.
    """
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return False
    if _exiting_on_error() and not force:
        return False
    # A Runner or DDP wrapper left in a reference cycle still holds the group.
    gc.collect()
    dist.destroy_process_group()
    gc.collect()
    return True


def gloo_worker_threads():
    """Number of live gloo worker threads of this process (Linux; 0 elsewhere)."""
    try:
        tasks = os.listdir('/proc/self/task')
    except OSError:
        return 0
    count = 0
    for tid in tasks:
        try:
            with open(f'/proc/self/task/{tid}/comm') as f:
                count += f.read().strip() == 'pt_gloo_runloop'
        except OSError:
            pass
    return count
