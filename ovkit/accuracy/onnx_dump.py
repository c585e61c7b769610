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

Error attribution (``isolate_from``): a module call is isolated when its exported nodes cut
out of the graph on their own: the sub-graph from the values entering the module (its exposed
inputs) to its outputs, extracted with ``onnx.utils.Extractor``, must need no other computed
value (the nodes a single module maps to). All the cut-out sub-graphs run side by side in one
ONNX Runtime session, in one run (one extra forward pass), on the reference's recorded inputs.
Calls that do not cut out (shape arithmetic on tensors from elsewhere, a module exported as no
node) are listed with the reason in the manifest (``isolation.skipped``) and in the report.
"""
import os.path as osp
import time
import warnings
from dataclasses import asdict

import numpy as np
import torch
from torch import nn

from .capture import (
    call_model,
    describe,
    flatten_tensors,
    leaf_modules,
    module_args,
    parse_setting,
    replace_tensors,
    to_numpy,
)
from .common import progress as progress_bar
from .manifest import MODEL_INPUT, MODEL_OUTPUT, AccuracyError, Dump, DumpWriter, load_dump

OPSET = 17


class _Exposer(nn.Module):
    """Returns (model outputs..., leaf tensors...) and records what each extra output is."""

    def __init__(self, model, template, forward, leaves, dump_inputs):
        super().__init__()
        self.model = model
        self.template = template
        self.forward_fn = forward
        self.leaves = leaves
        self.dump_inputs = dump_inputs
        self.captured = []  # (name, kind, index, path, module_type)
        self.n_outputs = 0
        self.output_paths = []

    def forward(self, *flat_inputs):
        self.captured = []
        tensors = []

        def record(name, module, obj, kind):
            for index, (path, t) in enumerate(flatten_tensors(obj)):
                self.captured.append((name, kind, index, path, type(module).__name__))
                tensors.append(t.clone())

        handles = []
        for name, m in self.leaves:
            if self.dump_inputs:
                handles.append(m.register_forward_pre_hook(
                    lambda mod, args, kwargs, name=name: record(
                        name, mod, module_args(args, kwargs), 'input'),
                    with_kwargs=True))
            handles.append(m.register_forward_hook(
                lambda mod, args, out, name=name: record(name, mod, out, 'output')))
        try:
            inputs = replace_tensors(self.template, iter(flat_inputs))
            out = call_model(self.model, inputs, self.forward_fn)
        finally:
            for h in handles:
                h.remove()
        flat_out = flatten_tensors(out)
        self.n_outputs = len(flat_out)
        self.output_paths = [p for p, _ in flat_out]
        return tuple(t for _, t in flat_out) + tuple(tensors)


def export_exposed(model, inputs, path, forward=None, include=None, exclude=None, skip=(),
                   dump_inputs=False):
    """Export ``model`` to ``path`` with leaf outputs exposed.

    Args:
        model: the model.
        inputs: its inputs (as for :func:`~.dump.dump_module`).
        path: the ``.onnx`` file to write.
        forward: ``forward(model, inputs)``, or None.
        include: regex of leaf module names to expose.
        exclude: regex of leaf module names not to expose.
        skip: name prefixes of modules not to expose.
        dump_inputs: expose each leaf module's inputs too.

    Returns:
        (wrapper, flat input tensors); ``wrapper.captured`` / ``n_outputs`` describe the graph
        outputs.
    """
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
            wrapper.output_names = names
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
              overwrite=False, progress=False, seed=0, meta=None, dump_inputs=False,
              isolate_from=None):
    """Export, run under ONNX Runtime (CPU) and dump like :func:`~.dump.dump_module` (same
    arguments; ``isolate_from`` isolates what cuts out, see the module docstring)."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise AccuracyError('the onnx setting needs onnxruntime: pip install onnxruntime '
                            '(see requirements/optional.txt)') from e
    reference = None
    if isolate_from is not None:
        reference = isolate_from if isinstance(isolate_from, Dump) else load_dump(isolate_from)
        if not any(e.kind == 'input' for e in reference.entries):
            raise AccuracyError(
                f'the reference dump {reference.root} has no module inputs, which isolating '
                'needs: dump it with --dump-inputs (dump_inputs=True), or use `run --isolate`.')
    setting = parse_setting('onnx')
    writer = DumpWriter(out_dir, overwrite)
    onnx_path = osp.join(out_dir, 'model.onnx')
    was_training = model.training
    model.eval()
    prog, ptask = progress_bar(progress, 3, 'dump onnx')
    extra_meta = {}
    try:
        with prog:
            torch.manual_seed(seed)
            wrapper, flat = export_exposed(model, inputs, onnx_path, forward, include, exclude,
                                           skip, dump_inputs or reference is not None)
            prog.update(ptask, advance=1)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            try:
                sess = ort.InferenceSession(onnx_path, opts, providers=['CPUExecutionProvider'])
                feed = {i.name: to_numpy(t) for i, t in zip(sess.get_inputs(), flat)}
                t0 = time.perf_counter()
                results = sess.run(None, feed)
                extra_meta['forward_seconds'] = time.perf_counter() - t0
            except Exception as e:
                raise AccuracyError(f'ONNX Runtime could not run {onnx_path}: {e}. The export '
                                    'used an op or type ONNX Runtime lacks.') from e
            prog.update(ptask, advance=1)
            for i, t in enumerate(flat):
                writer.add(MODEL_INPUT, to_numpy(t), kind='model_input', index=i,
                           dtype=str(t.dtype), path=flatten_tensors(inputs)[i][0])
            n = wrapper.n_outputs
            isolated = (_OnnxIsolator(onnx_path, wrapper, reference, ort)
                        if reference is not None else None)
            for (name, kind, index, path, mtype), arr in zip(wrapper.captured, results[n:]):
                if kind == 'input' and not dump_inputs:
                    continue
                if kind == 'output' and isolated is not None and index == 0:
                    isolated.plan(name, writer.next_call(name, 'output', 0))
                writer.add(name, np.asarray(arr), kind=kind, index=index, path=path,
                           module_type=mtype)
            for i, (path, arr) in enumerate(zip(wrapper.output_paths, results[:n])):
                writer.add(MODEL_OUTPUT, np.asarray(arr), kind='model_output', index=i,
                           path=path)
            if isolated is not None:
                isolated.run(writer)
                extra_meta['isolation'] = isolated.meta()
            prog.update(ptask, advance=1)
    finally:
        model.train(was_training)
        writer.close(setting=asdict(setting), model=type(model).__name__,
                     torch=torch.__version__, onnxruntime=ort.__version__, onnx_file='model.onnx',
                     opset=OPSET, leaf_modules=len(leaf_modules(model, include, exclude, skip)),
                     inputs=describe(inputs), seed=seed, **extra_meta, **(meta or {}))
    return load_dump(out_dir)


class _OnnxIsolator:
    """Cuts each module call's nodes out of the exported graph and runs them under ONNX
    Runtime on the reference's recorded inputs (see the module docstring).

    Args:
        onnx_path: the exported model (module inputs and outputs exposed).
        wrapper: the export wrapper (its ``captured`` / ``output_names`` name the outputs).
        reference: the reference :class:`~.manifest.Dump`, with module inputs.
        ort: the onnxruntime module.
    """

    def __init__(self, onnx_path, wrapper, reference, ort):
        import onnx
        self.ort, self.ref = ort, reference
        self.model = onnx.load(onnx_path)
        self.producer = {o: nd for nd in self.model.graph.node for o in nd.output}
        self.ref_inputs = {(e.name, e.call, e.index): e for e in reference.entries
                           if e.kind == 'input'}
        self.calls = {}  # (name, call) -> {'input': {index: value}, 'output': {index: value}}
        seen = {}
        names = wrapper.output_names[wrapper.n_outputs:]
        for (name, kind, index, *_), out_name in zip(wrapper.captured, names):
            call = seen.get((name, kind, index), 0)
            seen[(name, kind, index)] = call + 1
            self.calls.setdefault((name, call), {'input': {}, 'output': {}})[kind][index] = \
                self._source(out_name)
        self.extractor = None
        self.planned = []
        self.skipped, self.n_calls = {}, 0
        self.seconds = self.cut_seconds = self.run_seconds = 0.0

    def _source(self, out_name):
        """The graph value a clone copied (the exposed output is an Identity of it)."""
        node = self.producer.get(out_name)
        return node.input[0] if node is not None and node.op_type == 'Identity' else out_name

    def _cut(self, ins, outs):
        """The sub-model computing ``outs`` from ``ins``, or a reason why there is none."""
        from onnx.utils import Extractor
        if set(outs) & set(ins):
            return None, 'exports to no node (returns an input unchanged)'
        if self.extractor is None:
            self.extractor = Extractor(self.model)
        try:
            sub = self.extractor.extract_model(list(ins), list(outs))
        except Exception as e:  # no value info for an input, ...
            return None, f'the sub-graph could not be cut out ({type(e).__name__}: {e})'
        known = ({i.name for i in sub.graph.input} | {t.name for t in sub.graph.initializer} |
                 {o for nd in sub.graph.node for o in nd.output})
        missing = sorted({i for nd in sub.graph.node for i in nd.input if i and i not in known})
        if missing:
            return None, ('its exported nodes also need values computed outside the module '
                          f'({", ".join(missing[:3])}): not a single-module sub-graph')
        if not sub.graph.node:
            return None, 'exports to no node'
        return sub, ''

    def plan(self, name, call):
        """Cut out call ``call`` of module ``name`` for :meth:`run` (or keep the reason)."""
        label = f'{name}#{call}' if call else name
        io = self.calls.get((name, call))
        if io is None or not io['input']:
            self.skipped[label] = 'no exposed inputs (the module takes no tensor)'
            return
        if any((name, call, i) not in self.ref_inputs for i in io['input']):
            self.skipped[label] = 'the reference has no inputs for this call'
            return
        t0 = time.perf_counter()
        outs = list(dict.fromkeys(io['output'].values()))
        sub, reason = self._cut(set(io['input'].values()), outs)
        self.cut_seconds += time.perf_counter() - t0
        if sub is None:
            self.skipped[label] = reason
            return
        self.planned.append((name, call, io, sub, outs))

    def run(self, writer):
        """Every planned sub-graph in one ONNX Runtime session and one run (the cost of one
        forward pass, not one session per module); writes the isolated outputs."""
        if not self.planned:
            return
        from onnx import compose, helper
        t0 = time.perf_counter()
        graphs, feed = [], {}
        for k, (name, call, io, sub, outs) in enumerate(self.planned):
            prefixed = compose.add_prefix(sub, f'iso{k}/')
            graphs.append(prefixed.graph)
            names = {i.name for i in sub.graph.input}
            for index, value in io['input'].items():
                if value not in names:
                    continue
                arr = np.load(self.ref.file_path(self.ref_inputs[(name, call, index)]))
                elem = next(i for i in sub.graph.input if i.name == value).type.tensor_type
                feed[f'iso{k}/{value}'] = arr.astype(
                    helper.tensor_dtype_to_np_dtype(elem.elem_type), copy=False)
        merged = helper.make_graph(
            [n for g in graphs for n in g.node], 'isolated',
            [i for g in graphs for i in g.input], [o for g in graphs for o in g.output],
            [t for g in graphs for t in g.initializer],
            value_info=[v for g in graphs for v in g.value_info])
        model = helper.make_model(merged, opset_imports=self.model.opset_import,
                                  ir_version=self.model.ir_version)
        opts = self.ort.SessionOptions()
        opts.log_severity_level = 3
        try:
            sess = self.ort.InferenceSession(model.SerializeToString(), opts,
                                             providers=['CPUExecutionProvider'])
            t1 = time.perf_counter()
            got = dict(zip([o.name for o in merged.output], sess.run(None, feed)))
            self.run_seconds = time.perf_counter() - t1
        except Exception as e:
            for name, call, *_ in self.planned:
                self.skipped[f'{name}#{call}' if call else name] = (
                    f'ONNX Runtime failed on the cut-out nodes: {e}')
            return
        for k, (name, call, io, sub, outs) in enumerate(self.planned):
            for index in sorted(io['output']):
                writer.add(name, np.asarray(got[f'iso{k}/{io["output"][index]}']),
                           kind='isolated', index=index, call=call)
            self.n_calls += 1
        self.seconds = self.cut_seconds + time.perf_counter() - t0

    def meta(self):
        return dict(reference=self.ref.root, calls=self.n_calls, seconds=self.seconds,
                    cut_seconds=self.cut_seconds, run_seconds=self.run_seconds,
                    skipped=self.skipped)
