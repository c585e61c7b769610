"""Every upstream fix ovkit needs on today's stack, in one place.

`import ovkit` calls :func:`apply` once. Each patch states why it exists and is covered by
``tests/test_compat.py``. Patches are narrow: they change behaviour only where the upstream
code is broken on this stack (torch 2.14, numpy 2, a CPU-only machine, the mmaction2 wheel).
"""
import importlib.abc
import importlib.machinery
import importlib.util
import os.path as osp
import sys
import types
import warnings

_APPLIED = False


# --------------------------------------------------------------------------- import hooks
class _ImportHooks(importlib.abc.MetaPathFinder):
    """Replace a missing module with a file of ours, or run a fix right after a module loads.

    Lazy on purpose: `import ovkit` must not import lvis or mmaction just to patch them.
    """

    def __init__(self):
        self.replacements = {}  # module name -> (path of our file, is_package)
        self.post_hooks = {}  # module name -> fn(module)
        self._resolving = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.replacements:
            file, is_pkg = self.replacements[fullname]
            return importlib.util.spec_from_file_location(
                fullname, file, submodule_search_locations=[] if is_pkg else None)
        if fullname not in self.post_hooks or fullname in self._resolving:
            return None
        self._resolving.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._resolving.discard(fullname)
        if spec is None or spec.loader is None:
            return spec
        hook, loader = self.post_hooks[fullname], spec.loader
        exec_module = loader.exec_module

        def exec_and_fix(module):
            exec_module(module)
            hook(module)

        loader.exec_module = exec_and_fix
        return spec

    def after_import(self, name, hook):
        if name in sys.modules:
            hook(sys.modules[name])
        else:
            self.post_hooks[name] = hook


_HOOKS = _ImportHooks()


# --------------------------------------------------------------------------- torch.load
def _history_buffer_getattr(obj, name):
    """Stand-in for ``builtins.getattr`` inside weights-only checkpoint loading.

    mmengine's MessageHub pickles ``HistoryBuffer.min/max/mean/current`` (its statistics
    table) by qualified name, which pickle encodes as ``getattr(HistoryBuffer, 'min')``.
    Allowlisting the real getattr would let a checkpoint reach any attribute of any allowed
    object, so only HistoryBuffer's own callables are resolved.
    """
    from mmengine.logging import HistoryBuffer
    # The defaults are registered only when a first HistoryBuffer is created, which a fresh
    # process loading a checkpoint has not done yet.
    known = obj is HistoryBuffer and (name in ('min', 'max', 'current', 'mean')
                                      or name in HistoryBuffer._statistics_methods)
    value = getattr(HistoryBuffer, name, None) if known else None
    if value is None or not callable(value):
        import pickle
        raise pickle.UnpicklingError(
            f'ovkit refuses getattr({obj!r}, {name!r}) in a weights-only checkpoint: only '
            'mmengine HistoryBuffer statistics methods are allowed.')
    return value


def mmengine_checkpoint_globals():
    """The globals an mmengine 0.10.7 checkpoint holds beyond tensors and containers.

    Found with ``torch.serialization.get_unsafe_globals_in_checkpoint`` on checkpoints that
    mmengine's CheckpointHook wrote (meta, message hub with HistoryBuffers, numpy scalars
    such as the ETA, numpy arrays inside the buffers). Both numpy 1 (``numpy.core``) and
    numpy 2 (``numpy._core``) module paths are listed so either can load the other's files.
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


def _allowlist_mmengine_checkpoints():
    """torch >= 2.6 loads with ``weights_only=True``; mmengine 0.10.7 calls plain
    ``torch.load`` for `load_checkpoint` and `--resume`, which then refuses its own files.
    We allowlist exactly the types mmengine writes; weights_only stays on, so a checkpoint
    with any other global is still refused."""
    import torch
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())


# --------------------------------------------------------------------------- mmaction2
def _mmaction_drn_missing():
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        return False
    root = list(spec.submodule_search_locations)[0]
    return not osp.isdir(osp.join(root, 'models', 'localizers', 'drn'))


def _provide_mmaction_drn():
    """The mmaction2 1.2.0 wheel and sdist ship without ``mmaction/models/localizers/drn``
    although ``localizers/__init__.py`` imports it, so ``import mmaction.models`` (and every
    build under ``default_scope='mmaction'``) fails. We serve a stand-in module whose DRN
    fails with a clear message when built; everything else in mmaction works."""
    if not _mmaction_drn_missing():
        return
    stub = osp.join(osp.dirname(__file__), '_mmaction_drn_stub.py')
    _HOOKS.replacements['mmaction.models.localizers.drn'] = (stub, True)
    _HOOKS.replacements['mmaction.models.localizers.drn.drn'] = (stub, False)


# --------------------------------------------------------------------------- lvis
class _NumpyWithFloat(types.ModuleType):
    """numpy as lvis 0.5.3 expects it: ``np.float`` (removed in numpy 1.24) is ``float``."""
    float = float

    def __getattr__(self, name):
        import numpy
        return getattr(numpy, name)


def _fix_lvis_eval(module):
    """lvis 0.5.3 ``LVISEval.accumulate`` calls ``astype(dtype=np.float)``; give only that
    module a numpy whose ``float`` exists instead of adding the alias to numpy itself."""
    module.np = _NumpyWithFloat('numpy')


# --------------------------------------------------------------------------- distributed on CPU
def _patch_mmengine_dist_for_cpu():
    """mmengine's pytorch launcher calls ``torch.cuda.set_device(local_rank)``
    unconditionally and configs ask for nccl, so `dist_train.sh CONFIG 2` dies on a machine
    without a GPU. Without CUDA we skip set_device and use gloo. The DDP wrapper is then
    given ``device_ids=[local_rank]``, which torch rejects for a CPU module: drop it there.
    SyncBatchNorm has no CPU kernel, and mmengine reverts it to BatchNorm only in
    non-distributed runs, so a SyncBN config (e.g. configs/baron/coco.py) launched on CPU
    processes gets plain BatchNorm too (per-process statistics), with a warning."""
    import torch
    import torch.distributed as torch_dist
    from mmengine.dist import utils as dist_utils
    from mmengine.model.wrappers import distributed as mm_ddp

    if getattr(dist_utils._init_dist_pytorch, '_ovkit', False):
        return
    original_init = dist_utils._init_dist_pytorch

    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        # Workers die with their launcher and destroy their process groups at exit (the
        # gloo exit abort): see ovkit.engine.process.
        from ovkit.engine import process
        process.before_init_process_group()
        if torch.cuda.is_available() or init_backend != 'torch' or _other_accelerator():
            original_init(backend, init_backend=init_backend, **kwargs)
        else:
            if backend != 'gloo':
                warnings.warn(
                    f'ovkit: no CUDA device, using the gloo backend instead of {backend}')
            torch_dist.init_process_group(backend='gloo', **kwargs)
        process.after_init_process_group()

    _init_dist_pytorch._ovkit = True
    dist_utils._init_dist_pytorch = _init_dist_pytorch

    original_ddp_init = mm_ddp.MMDistributedDataParallel.__init__

    def ddp_init(self, module, detect_anomalous_params=False, **kwargs):
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        if on_cpu and kwargs.get('device_ids') is not None:
            kwargs['device_ids'] = None
            kwargs['output_device'] = None
        if on_cpu and any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules()):
            from mmengine.model import revert_sync_batchnorm
            warnings.warn('ovkit: SyncBatchNorm needs a GPU; using BatchNorm in this CPU '
                          'distributed run')
            module = revert_sync_batchnorm(module)
        original_ddp_init(self, module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    mm_ddp.MMDistributedDataParallel.__init__ = ddp_init


def _other_accelerator():
    from mmengine.device import is_mlu_available, is_musa_available, is_npu_available
    return is_mlu_available() or is_npu_available() or is_musa_available()


# --------------------------------------------------------------------------- entry point
def apply():
    """Apply every patch once (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    _APPLIED = True
    if _HOOKS not in sys.meta_path:
        sys.meta_path.insert(0, _HOOKS)
    _allowlist_mmengine_checkpoints()
    _provide_mmaction_drn()
    _HOOKS.after_import('lvis.eval', _fix_lvis_eval)
    _patch_mmengine_dist_for_cpu()
