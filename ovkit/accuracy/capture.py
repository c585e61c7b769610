"""What the torch dumper, the ONNX dumper and the attribution share: settings, leaf modules,
nested outputs flattened to tensors in a fixed order, and tensors moved to numpy / a device.

Settings (``setting=``):

==================  ===========================================================
fp32 (alias cpu)    CPU, float32: the ground truth
fp16, bf16          CPU, ``torch.autocast('cpu', dtype)``
cuda (cuda-fp32)    CUDA, float32
cuda-fp16/-bf16     CUDA, ``torch.autocast('cuda', dtype)``
onnx (alias ort)    ONNX Runtime on CPU; intermediate outputs exposed (:mod:`.onnx_dump`)
==================  ===========================================================
"""
import re
from dataclasses import dataclass

import numpy as np
import torch

from .manifest import AccuracyError


@dataclass(frozen=True)
class Setting:
    """One way of running the model.

    Args:
        name: canonical name (a key of :data:`SETTINGS`).
        backend: ``torch`` or ``onnxruntime``.
        device: torch device type.
        dtype: autocast dtype; ``float32`` means no autocast.
    """
    name: str
    backend: str = 'torch'
    device: str = 'cpu'
    dtype: str = 'float32'

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

    Args:
        obj: any nesting of tensors, numpy arrays, containers and data samples.
        path: prefix of the returned paths.
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


def replace_tensors(obj, it):
    """``obj`` with its tensors replaced, in :func:`flatten_tensors` order, from iterator
    ``it`` (containers only; data samples are kept as they are)."""
    if isinstance(obj, torch.Tensor):
        return next(it)
    if isinstance(obj, dict):
        return type(obj)((k, replace_tensors(v, it)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, '_fields'):
        return type(obj)(replace_tensors(v, it) for v in obj)
    return obj


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

    Args:
        model: the model.
        include: regex; keep only names it matches.
        exclude: regex; drop names it matches.
        skip: name prefixes left out (e.g. ``data_preprocessor``, run once outside).
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


def module_args(args, kwargs):
    """A module call's arguments as one list: positional, then keyword in name order (the
    order in which module inputs are dumped and matched)."""
    return list(args) + [kwargs[k] for k in sorted(kwargs)]


def write_tensors(writer, name, obj, kind, module_type='', call=None):
    """Save every tensor of ``obj`` through ``writer`` (a :class:`~.manifest.DumpWriter`)."""
    for index, (path, t) in enumerate(flatten_tensors(obj)):
        writer.add(name, to_numpy(t), kind=kind, index=index, dtype=str(t.dtype), path=path,
                   module_type=module_type, call=call)


def describe(obj):
    """[{path, shape, dtype}] of the tensors of ``obj`` (for the manifest)."""
    return [dict(path=p, shape=list(t.shape), dtype=str(t.dtype)) for p, t in flatten_tensors(obj)]


def device_name(device):
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    import platform
    return platform.processor() or platform.machine()
