"""Dump under ONNX Runtime, with every leaf module's output exposed as a graph output.

The model is wrapped so that, while it is traced for export, forward hooks on the leaf
modules ``clone()`` each output and the wrapper returns them after the model's own outputs.
The clones become graph outputs named after their modules, so the ONNX Runtime values map
back to module names by construction (no guessing from node names), and a later in-place op
cannot alias them. The TorchScript exporter (``dynamo=False``) is used: it traces through
hooks and needs no onnxscript; torch 2.14 still ships it.

ONNX Runtime runs with its default graph optimisations (what a deployment gets); exposing an
intermediate output keeps the node that produces it, so fusions across exposed tensors are
disabled. The exported file is kept as ``model.onnx`` in the dump directory.
"""
import os.path as osp
import warnings
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from .dump import (_describe, _progress, call_model, flatten_tensors, leaf_modules,
                   parse_setting, to_numpy)
from .manifest import MODEL_INPUT, MODEL_OUTPUT, AccuracyError, DumpWriter, load_dump

OPSET = 17


def _replace_tensors(obj, it):
    """``obj`` with its tensors replaced, in :func:`flatten_tensors` order, from ``it``."""
    if isinstance(obj, torch.Tensor):
        return next(it)
    if isinstance(obj, dict):
        return type(obj)((k, _replace_tensors(v, it)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, '_fields'):
        return type(obj)(_replace_tensors(v, it) for v in obj)
    return obj


class _Exposer(nn.Module):
    """Returns (model outputs..., leaf tensors...) and records what each extra output is."""

    def __init__(self, model, template, forward, leaves, dump_inputs):
        super().__init__()
        self.model = model
        self.template = template
        self.forward_fn = forward
        self.leaves = leaves
        self.dump_inputs = dump_inputs
        self.captured = []  # (name, kind, index, path, module_type, dtype)
        self.n_outputs = 0
        self.output_info = []

    def forward(self, *flat_inputs):
        self.captured = []
        tensors = []

        def record(name, module, obj, kind):
            for index, (path, t) in enumerate(flatten_tensors(obj)):
                self.captured.append((name, kind, index, path, type(module).__name__,
                                      str(t.dtype)))
                tensors.append(t.clone())

        handles = []
        for name, m in self.leaves:
            if self.dump_inputs:
                handles.append(m.register_forward_pre_hook(
                    lambda mod, args, kwargs, name=name: record(
                        name, mod, list(args) + [kwargs[k] for k in sorted(kwargs)], 'input'),
                    with_kwargs=True))
            handles.append(m.register_forward_hook(
                lambda mod, args, out, name=name: record(name, mod, out, 'output')))
        try:
            inputs = _replace_tensors(self.template, iter(flat_inputs))
            out = call_model(self.model, inputs, self.forward_fn)
        finally:
            for h in handles:
                h.remove()
        flat_out = flatten_tensors(out)
        self.n_outputs = len(flat_out)
        self.output_info = [(p, str(t.dtype)) for p, t in flat_out]
        return tuple(t for _, t in flat_out) + tuple(tensors)


def export_exposed(model, inputs, path, forward=None, include=None, exclude=None, skip=(),
                   dump_inputs=False):
    """Export ``model`` to ``path`` with leaf outputs exposed; returns the wrapper (its
    ``captured`` / ``n_outputs`` describe the graph outputs) and the flat input tensors."""
    flat = [t for _, t in flatten_tensors(inputs)]
    if not flat:
        raise AccuracyError('ONNX export needs at least one input tensor; got none')
    leaves = leaf_modules(model, include, exclude, skip)
    wrapper = _Exposer(model, inputs, forward, leaves, dump_inputs).eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')  # legacy-exporter deprecation, tracer warnings
            with torch.no_grad():
                # probe run: learn the number of outputs to name them
                probe = wrapper(*flat)
            names = [f'{MODEL_OUTPUT}:{i}' for i in range(wrapper.n_outputs)]
            calls = {}
            for name, kind, index, *_ in wrapper.captured:
                call = calls.get((name, kind, index), 0)
                calls[(name, kind, index)] = call + 1
                names.append(f'{name}{":in" if kind == "input" else ""}#{call}:{index}')
            if len(probe) != len(names):
                raise RuntimeError('the model ran a different path on the second call')
            torch.onnx.export(wrapper, tuple(flat), path, dynamo=False, opset_version=OPSET,
                              input_names=[f'{MODEL_INPUT}:{i}' for i in range(len(flat))],
                              output_names=names, do_constant_folding=True)
    except AccuracyError:
        raise
    except Exception as e:
        raise AccuracyError(
            f'ONNX export of {type(model).__name__} failed: {type(e).__name__}: {e}. Models '
            'with data-dependent control flow, data samples or custom ops (e.g. mmcv NMS) do '
            'not export; with a config try --mode tensor or --mode feat (backbone + neck), or '
            'pass an exportable submodule to ovkit.accuracy.dump_module.') from e
    return wrapper, flat


def dump_onnx(model, inputs, out_dir, forward=None, include=None, exclude=None, skip=(),
              overwrite=False, progress=False, seed=0, meta=None, dump_inputs=False):
    """Export, run under ONNX Runtime (CPU) and dump like :func:`~.dump.dump_module`."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise AccuracyError('the onnx setting needs onnxruntime: pip install onnxruntime '
                            '(see requirements/optional.txt)') from e
    setting = parse_setting('onnx')
    writer = DumpWriter(out_dir, overwrite)
    onnx_path = osp.join(out_dir, 'model.onnx')
    was_training = model.training
    model.eval()
    prog, ptask = _progress(progress, 3, 'dump onnx')
    try:
        with prog:
            torch.manual_seed(seed)
            wrapper, flat = export_exposed(model, inputs, onnx_path, forward, include, exclude,
                                           skip, dump_inputs)
            prog.update(ptask, advance=1)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            try:
                sess = ort.InferenceSession(onnx_path, opts, providers=['CPUExecutionProvider'])
                feed = {i.name: to_numpy(t) for i, t in zip(sess.get_inputs(), flat)}
                results = sess.run(None, feed)
            except Exception as e:
                raise AccuracyError(f'ONNX Runtime could not run {onnx_path}: {e}. The export '
                                    'used an op or type ONNX Runtime lacks.') from e
            prog.update(ptask, advance=1)
            for i, t in enumerate(flat):
                writer.add(MODEL_INPUT, to_numpy(t), kind='model_input', index=i,
                           dtype=str(t.dtype), path=flatten_tensors(inputs)[i][0])
            n = wrapper.n_outputs
            for (name, kind, index, path, mtype, _), arr in zip(wrapper.captured, results[n:]):
                writer.add(name, np.asarray(arr), kind=kind, index=index, path=path,
                           module_type=mtype)
            for i, ((path, dtype), arr) in enumerate(zip(wrapper.output_info, results[:n])):
                writer.add(MODEL_OUTPUT, np.asarray(arr), kind='model_output', index=i,
                           path=path)
            prog.update(ptask, advance=1)
    finally:
        model.train(was_training)
        writer.close(setting=asdict(setting), model=type(model).__name__,
                     torch=torch.__version__, onnxruntime=ort.__version__, onnx_file='model.onnx',
                     opset=OPSET, leaf_modules=len(leaf_modules(model, include, exclude, skip)),
                     inputs=_describe(inputs), seed=seed, **(meta or {}))
    return load_dump(out_dir)
