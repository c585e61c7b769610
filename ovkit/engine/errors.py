"""Errors a user can act on, and how the tools print them: one line, once, no traceback.

Every check of :mod:`ovkit.engine` (preflight, annotation sanity, skipped samples, non-finite
loss, checkpoint fit) raises a subclass of :class:`UserError` whose message already names the
config key, the file and the fix. The tools catch them in :func:`exit_on_user_error` and print
``error: <message>`` to stderr. A *collective* error is raised by every rank at the same point
(decided together), so only rank 0 prints it; any other error is printed by the rank that met it.
This module imports neither torch nor mmengine.
"""
import contextlib
import os
import sys

__all__ = ['UserError', 'exit_on_user_error', 'env_rank', 'EXIT_USER_ERROR']

# Exit status of a run stopped by a UserError (argparse uses 2 for usage errors as well).
EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input or run, with a message that says what to do.

    Args:
        message: the full message: key, path, what is wrong, the fix.
    """

    collective = False  # True: every rank raises it together, only rank 0 prints it

    def __init__(self, message):
        super().__init__(message)


def env_rank():
    """This process's global rank from the launcher's environment (0 when not launched)."""
    for name in ('RANK', 'SLURM_PROCID', 'OMPI_COMM_WORLD_RANK', 'PMI_RANK'):
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip('-').isdigit():
            return int(value)
    return 0


def _one_line(exc):
    """The message of ``exc``; for one re-raised by a DataLoader worker, the original's."""
    text = str(exc).strip()
    if 'Original Traceback' in text:  # torch's ExceptionWrapper appended the worker traceback
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1]
        prefix = f'{type(exc).__module__}.{type(exc).__name__}: '
        for cut in (prefix, f'{type(exc).__name__}: '):
            if last.startswith(cut):
                return last[len(cut):]
        return last
    return text


@contextlib.contextmanager
def exit_on_user_error(stream=None):
    """Turn a :class:`UserError` raised inside the block into ``error: ...`` and exit 2.

    Args:
        stream: where to print (default: ``sys.stderr``).
    """
    try:
        yield
    except UserError as exc:
        if not exc.collective or env_rank() == 0:
            print(f'error: {_one_line(exc)}', file=stream or sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
