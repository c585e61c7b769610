"""Dump every leaf module's outputs (and inputs on request) of one forward pass.

Forward hooks on the leaf modules save each tensor at once (memory stays at one tensor, and an
in-place op further on cannot change what was saved). Nested tuples/lists/dicts and
OpenMMLab data samples are flattened in a fixed order, so two runs of one model produce the
same (name, kind, call, index) keys whatever the setting. See :mod:`.manifest` for the layout.

Settings (``setting=``):

==================  ===========================================================
fp32 (alias cpu)    CPU, float32: the ground truth
fp16, bf16          CPU, ``torch.autocast('cpu', dtype)``
cuda (cuda-fp32)    CUDA, float32
cuda-fp16/-bf16     CUDA, ``torch.autocast('cuda', dtype)``
onnx (alias ort)    ONNX Runtime on CPU; intermediate outputs exposed (:mod:`.onnx_dump`)
==================  ===========================================================
"""
import contextlib
import re
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .manifest import MODEL_INPUT, MODEL_OUTPUT, AccuracyError, DumpWriter, load_dump


@dataclass(frozen=True)
class Setting:
    name: str
    backend: str = 'torch'  # torch | onnxruntime
    device: str = 'cpu'
    dtype: str = 'float32'  # autocast dtype; float32 = no autocast

    @property
    def autocast_dtype(self):
        return None if self.dtype == 'float32' else getattr(torch, self.dtype)


_ALIASES = {'cpu': 'fp32', 'cpu-fp32': 'fp32', 'cpu-fp16': 'fp16', 'cpu-bf16': 'bf16',
            'cuda-fp32': 'cuda', 'ort': 'onnx', 'onnxruntime': 'onnx', 'float32': 'fp32',
            'float16': 'fp16', 'half': 'fp16', 'bfloat16': 'bf16'}
SETTINGS = {
    'fp32': Setting('fp32'),
    'fp16': Setting('fp16', dtype='float16'),
    'bf16': Setting('bf16', dtype='bfloat16'),
    'cuda': Setting('cuda', device='cuda'),
    'cuda-fp16': Setting('cuda-fp16', device='cuda', dtype='float16'),
    'cuda-bf16': Setting('cuda-bf16', device='cuda', dtype='bfloat16'),
    'onnx': Setting('onnx', backend='onnxruntime'),
}


def parse_setting(setting):
    """Setting object from a name (see module docstring); AccuracyError lists the valid ones."""
    if isinstance(setting, Setting):
        return setting
    key = str(setting).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in SETTINGS:
        raise AccuracyError(f'unknown setting {setting!r}; choose one of '
                            f'{", ".join(SETTINGS)} (aliases: {", ".join(_ALIASES)})')
    s = SETTINGS[key]
    if s.device == 'cuda' and not torch.cuda.is_available():
        raise AccuracyError(
            f'setting {s.name!r} needs a CUDA GPU, but torch.cuda.is_available() is False here '
            f'(torch {torch.__version__}). Use fp32/fp16/bf16 (CPU) or onnx on this machine.')
    return s


# ----------------------------------------------------------------------------- flattening
def _data_element_type():
    try:
        from mmengine.structures import BaseDataElement
        return BaseDataElement
    except ImportError:  # pragma: no cover - mmengine is a dependency; keep plain torch usable
        return ()


def flatten_tensors(obj, path=''):
    """[(path, tensor)] of every tensor in ``obj``, depth first, in a deterministic order.

    Tuples/lists by position, dicts by insertion order, data samples (mmengine
    ``BaseDataElement``) by sorted field name; of a data sample only the ``pred*`` fields are
    kept when it has any (its gt/ignored fields are inputs, not results). Non-tensor leaves
    are skipped.
    """
    out = []
    _flatten(obj, path, out, _data_element_type(), set())
    return out


def _flatten(obj, path, out, element_type, seen):
    if isinstance(obj, torch.Tensor):
        out.append((path or '.', obj))
    elif isinstance(obj, np.ndarray):
        if obj.dtype.kind in 'biuf':
            out.append((path or '.', torch.from_numpy(np.ascontiguousarray(obj))))
    elif element_type and isinstance(obj, element_type):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        # sorted: data fields live in a set, whose order changes between processes
        keys = sorted(obj.keys())
        preds = [k for k in keys if k.startswith('pred')]
        for k in preds or keys:
            _flatten(getattr(obj, k), f'{path}.{k}', out, element_type, seen)
    elif isinstance(obj, dict):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        for k, v in obj.items():
            _flatten(v, f'{path}[{k!r}]', out, element_type, seen)
    elif isinstance(obj, (tuple, list)):
        if id(obj) in seen:
            return
        seen.add(id(obj))
        for i, v in enumerate(obj):
            _flatten(v, f'{path}[{i}]', out, element_type, seen)


_NUMPY_DTYPES = {torch.float16, torch.float32, torch.float64, torch.int8, torch.int16,
                 torch.int32, torch.int64, torch.uint8, torch.bool}


def to_numpy(t):
    """A tensor as a numpy array numpy can save; bfloat16 and other exotic floats go to
    float32 (exact for bfloat16), the original dtype is kept in the manifest."""
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.dequantize()
    if t.dtype not in _NUMPY_DTYPES:
        t = t.float() if (t.is_floating_point() or t.is_complex()) else t.long()
    return t.cpu().numpy()


def to_device(obj, device):
    """Move every tensor / data sample in a nested input structure to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return type(obj)((k, to_device(v, device)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, '_fields'):
        return type(obj)(to_device(v, device) for v in obj)
    element_type = _data_element_type()
    if element_type and isinstance(obj, element_type):
        return obj.to(device)
    return obj


def call_model(model, inputs, forward=None):
    """``forward(model, inputs)`` if given, else model(*inputs), model(**inputs) or
    model(inputs) for a tuple, a dict or anything else."""
    if forward is not None:
        return forward(model, inputs)
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def leaf_modules(model, include=None, exclude=None, skip=()):
    """[(name, module)] of modules without children, filtered by regexes on the name.

    ``skip``: name prefixes left out (e.g. ``data_preprocessor``, which the dumper runs once
    outside the compared forward).
    """
    inc = re.compile(include) if include else None
    exc = re.compile(exclude) if exclude else None
    leaves = []
    for name, m in model.named_modules():
        if not name or next(m.children(), None) is not None:
            continue
        if any(name == s or name.startswith(s + '.') for s in skip):
            continue
        if (inc and not inc.search(name)) or (exc and exc.search(name)):
            continue
        leaves.append((name, m))
    if not leaves and next(model.children(), None) is None:
        leaves = [('root', model)]
    return leaves


_DTYPE_ERRORS = ('expected scalar type', 'not implemented for', 'Float but found',
                 'dtype mismatch', 'expected both inputs to have same dtype')


@contextlib.contextmanager
def fp32_fallback_for_extensions(used):
    """Let compiled extension ops without float16/bfloat16 kernels run in float32.

    Under autocast, tensors reach mmcv's C++/CUDA ops (NMS, RoIAlign...) in low precision,
    and their CPU kernels accept float32 only. Each op is first called as is; only when its
    kernel rejects the dtype is it called again with float32 copies of the low-precision
    arguments, and those copies are written back to the originals (mmcv ops fill output
    tensors passed as arguments). That is what autocast does for the ops on its fp32 list.
    Names of ops that fell back are added to ``used``. Active only inside a dump.
    """
    import sys
    ext = sys.modules.get('mmcv._ext')
    if ext is None:
        yield
        return
    originals = {}

    def wrap(name, fn):
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (RuntimeError, TypeError) as e:
                if not any(m in str(e) for m in _DTYPE_ERRORS):
                    raise
            pairs = []

            def up(x):
                if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
                    y = x.float()
                    pairs.append((x, y))
                    return y
                return x

            out = fn(*[up(a) for a in args], **{k: up(v) for k, v in kwargs.items()})
            for orig, up_copy in pairs:
                orig.copy_(up_copy)
            used.add(name)
            return out
        return call

    for name in dir(ext):
        fn = getattr(ext, name)
        if not name.startswith('_') and callable(fn):
            originals[name] = fn
            setattr(ext, name, wrap(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(ext, name, fn)


def _progress(enabled, total, description):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn)
    prog = Progress(TextColumn('[bold]{task.description}'), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), disable=not enabled)
    return prog, prog.add_task(description, total=total)


def write_tensors(writer, name, obj, kind, module_type=''):
    for index, (path, t) in enumerate(flatten_tensors(obj)):
        writer.add(name, to_numpy(t), kind=kind, index=index, dtype=str(t.dtype), path=path,
                   module_type=module_type)


def _describe(obj):
    return [dict(path=p, shape=list(t.shape), dtype=str(t.dtype)) for p, t in flatten_tensors(obj)]


def dump_module(model, inputs, out_dir, setting='fp32', *, forward=None, dump_inputs=False,
                include=None, exclude=None, skip=(), overwrite=False, progress=False,
                seed=0, meta=None):
    """Run ``model`` once under ``setting`` and dump every leaf module's outputs to ``out_dir``.

    ``inputs``: a tensor, a tuple of positional arguments, a dict of keyword arguments, or
    anything ``forward(model, inputs)`` accepts. The model's own inputs (flattened) are saved
    first as ``__input__`` and its outputs last as ``__output__``. ``dump_inputs`` also saves
    each leaf module's inputs. Returns the :class:`~ovkit.accuracy.manifest.Dump` read back.

    A forward that fails part-way (e.g. an op without a float16 kernel) still leaves a valid,
    partial dump (``manifest['error']``) and raises AccuracyError naming the module.
    """
    s = parse_setting(setting)
    if s.backend == 'onnxruntime':
        from .onnx_dump import dump_onnx
        return dump_onnx(model, inputs, out_dir, forward=forward, include=include,
                         exclude=exclude, skip=skip, overwrite=overwrite, progress=progress,
                         seed=seed, meta=meta, dump_inputs=dump_inputs)
    writer = DumpWriter(out_dir, overwrite)
    leaves = leaf_modules(model, include, exclude, skip)
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    home = param.device if param is not None else torch.device('cpu')
    device = torch.device(s.device)
    state = dict(current=None, inside=False, seen=set())
    fallback_ops = set()
    prog, ptask = _progress(progress, len(leaves), f'dump {s.name}')
    handles = []

    def pre_hook(name):
        def hook(module, args, kwargs):
            state['current'], state['inside'] = name, True
            if dump_inputs:
                write_tensors(writer, name, list(args) + [kwargs[k] for k in sorted(kwargs)],
                              'input', type(module).__name__)
        return hook

    def post_hook(name):
        def hook(module, args, output):
            state['inside'] = False
            write_tensors(writer, name, output, 'output', type(module).__name__)
            if name not in state['seen']:
                state['seen'].add(name)
                prog.update(ptask, advance=1)
        return hook

    error = None
    try:
        for name, m in leaves:
            handles.append(m.register_forward_pre_hook(pre_hook(name), with_kwargs=True))
            handles.append(m.register_forward_hook(post_hook(name)))
        if device != home:
            model.to(device)
        dev_inputs = to_device(inputs, device)
        write_tensors(writer, MODEL_INPUT, dev_inputs, 'model_input')
        autocast = (torch.autocast(device.type, dtype=s.autocast_dtype) if s.autocast_dtype
                    else contextlib.nullcontext())
        fallback = (fp32_fallback_for_extensions(fallback_ops) if s.autocast_dtype
                    else contextlib.nullcontext())
        torch.manual_seed(seed)
        with prog, torch.no_grad(), autocast, fallback:
            output = call_model(model, dev_inputs, forward)
        write_tensors(writer, MODEL_OUTPUT, output, 'model_output')
    except AccuracyError:
        raise
    except Exception as e:  # keep the partial dump: it still shows where things went wrong
        if state['current'] is None:
            where = ''
        elif state['inside']:
            where = f' in module {state["current"]!r}'
        else:
            where = f' after module {state["current"]!r} (in code outside leaf modules)'
        error = (f'forward under setting {s.name!r} failed{where}: {type(e).__name__}: {e}')
        raise AccuracyError(
            f'{error}. The tensors before it are dumped in {out_dir} (partial); exclude that '
            'module from the low-precision run, or compare with another setting.') from e
    finally:
        for h in handles:
            h.remove()
        if device != home:
            model.to(home)
        model.train(was_training)
        all_meta = dict(setting=asdict(s), model=type(model).__name__, torch=torch.__version__,
                        device=_device_name(device), leaf_modules=len(leaves),
                        inputs=_describe(inputs), seed=seed, **(meta or {}))
        if error:
            all_meta['error'] = error
        if fallback_ops:
            all_meta['fp32_fallback_ops'] = sorted(fallback_ops)
        writer.close(**all_meta)
    return load_dump(out_dir)


def _device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    import platform
    return platform.processor() or platform.machine()


__all__ = ['Setting', 'SETTINGS', 'parse_setting', 'flatten_tensors', 'dump_module',
           'leaf_modules', 'to_numpy', 'to_device', 'call_model', 'write_tensors']
