"""Small helpers shared by every part of the package (no torch, no numpy): one copy each."""
import math


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
