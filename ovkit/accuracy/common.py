"""Small helpers shared by every part of the package (no torch, no numpy): one copy each."""
import math
import os

LOG_WIDTH = 160  # columns of tables and panels when the output is a file or a pipe
DEFAULT_MAX_PASSES = 32  # forward passes suggest-fp32's search may take


def finite(v):
    """True for a real, finite int/float (bools, None, strings and NaN/inf are not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def tensor_label(name, kind='output', call=0, index=0):
    """Short human name of a tensor: ``backbone.conv1#1[0]`` (call shown only when > 0);
    module inputs read ``name.input[i]``, isolated outputs ``name.isolated[i]``."""
    call = f'#{call}' if call else ''
    suffix = {'input': '.input', 'isolated': '.isolated'}.get(kind, '')
    return f'{name}{suffix}{call}[{index}]'


def row_label(row):
    """:func:`tensor_label` of a comparison row (a dict with name, kind, call, index)."""
    return tensor_label(row['name'], row.get('kind', 'output'), row.get('call') or 0,
                        row.get('index', 0))


def progress(enabled, total, description, transfer=False):
    """(rich Progress, task id); ``transfer`` shows bytes and speed instead of a count."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )
    columns = ((DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()) if transfer
               else (MofNCompleteColumn(), TimeElapsedColumn()))
    prog = Progress(TextColumn('[bold]{task.description}'), BarColumn(), *columns,
                    disable=not enabled)
    return prog, prog.add_task(description, total=total)


def make_console(quiet=False, file=None):
    """A rich console that never wraps a printed line to fit a terminal width.

    ``soft_wrap`` keeps every plain ``print`` on one line (file paths stay copyable, log
    lines stay greppable). When the output is not a terminal (a log file, a pipe, CI), rich
    would lay tables and panels out for 80 columns; they get :data:`LOG_WIDTH` instead,
    unless ``COLUMNS`` says otherwise.

    Args:
        quiet: print nothing.
        file: stream to write to (default: ``sys.stdout`` at print time).
    """
    from rich.console import Console
    console = Console(quiet=quiet, file=file, soft_wrap=True)
    if not console.is_terminal and not os.environ.get('COLUMNS'):
        console.width = LOG_WIDTH
    return console
