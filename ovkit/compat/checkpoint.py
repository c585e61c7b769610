"""torch >= 2.6 loads with ``weights_only=True``, which refuses mmengine 0.10.7 checkpoints.

mmengine calls plain ``torch.load`` for `load_checkpoint` and `--resume`; its checkpoints hold
numpy scalars/arrays (meta, ETA) and the message hub's ``HistoryBuffer``, which pickles its
statistics methods through ``getattr``. We allowlist exactly those types; weights_only stays
on, so a checkpoint with any other global is still refused.
"""
import pickle

_DONE = False


def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` inside weights-only checkpoint loading.

    mmengine's MessageHub pickles ``HistoryBuffer.min/max/mean/current`` (its statistics
    table) by qualified name, which pickle encodes as ``getattr(HistoryBuffer, 'min')``.
    Allowlisting the real getattr would let a checkpoint reach any attribute of any allowed
    object, so only HistoryBuffer's own statistics callables are resolved.
    """
    from mmengine.logging import HistoryBuffer

    # The defaults are registered only when a first HistoryBuffer is created, which a fresh
    # process loading a checkpoint has not done yet.
    known = obj is HistoryBuffer and (name in ('min', 'max', 'current', 'mean')
                                      or name in HistoryBuffer._statistics_methods)
    value = getattr(HistoryBuffer, name, None) if known else None
    if value is None or not callable(value):
        raise pickle.UnpicklingError(
            f'ovkit refuses getattr({obj!r}, {name!r}) in a weights-only checkpoint: only '
            'mmengine HistoryBuffer statistics methods are allowed.')
    return value


def mmengine_checkpoint_globals():
    """The globals an mmengine 0.10.7 checkpoint holds beyond tensors and containers.

    Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints that
    mmengine's CheckpointHook wrote. Both numpy 1 (``numpy.core``) and numpy 2
    (``numpy._core``) module paths are listed so either can load the other's files.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer

    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    entries = [HistoryBuffer, np.ndarray, np.dtype, (_history_buffer_getattr, 'builtins.getattr')]
    for mod in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((multiarray.scalar, f'{mod}.scalar'))
        entries.append((multiarray._reconstruct, f'{mod}._reconstruct'))
    # numpy >= 1.25 pickles some dtypes through their numpy.dtypes classes.
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in ('Float64DType', 'Float32DType', 'Float16DType', 'Int64DType', 'Int32DType',
                     'Int8DType', 'UInt8DType', 'BoolDType'):
            if hasattr(dtypes, name):
                entries.append(getattr(dtypes, name))
    return entries


def allow_mmengine_checkpoints(_module=None):
    """Allowlist mmengine's checkpoint types for weights-only loading (idempotent).

    Applied by ``import ovkit`` as soon as torch is imported; call it yourself only if you
    removed ovkit's import hook.
    """
    global _DONE
    if _DONE:
        return
    import torch
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    _DONE = True
