"""Dump every leaf module's outputs (and inputs on request) of one forward pass.

Forward hooks on the leaf modules save each tensor at once (memory stays at one tensor, and an
in-place op further on cannot change what was saved). Nested tuples/lists/dicts and
OpenMMLab data samples are flattened in a fixed order (:mod:`.capture`), so two runs of one
model produce the same (name, kind, call, index) keys whatever the setting. See
:mod:`.manifest` for the layout and :mod:`.capture` for the settings.

Error attribution (``isolate_from``): while the model runs under the setting, each leaf
module call is first run once more on the *reference's* recorded inputs of that call (a
reference dumped with ``dump_inputs=True``), and that output is saved as kind ``isolated``.
Comparing it with the reference output gives the error the module introduces itself; the
plain output carries the error inherited from upstream too. The inputs are fed as the
reference recorded them (its dtype, moved to this setting's device), so an op that autocast
leaves in the input's dtype (ReLU, pooling, add) adds nothing, and the rounding of a
low-precision output is charged to the module that produced it, once. The extra cost is one
call of every leaf module: at most one more forward pass (plus reading the inputs).
"""
import contextlib
import time
from dataclasses import asdict

import numpy as np
import torch

from .capture import (
    call_model,
    describe,
    device_name,
    flatten_tensors,
    leaf_modules,
    module_args,
    parse_setting,
    replace_tensors,
    to_device,
    write_tensors,
)
from .common import progress as progress_bar
from .manifest import MODEL_INPUT, MODEL_OUTPUT, AccuracyError, Dump, DumpWriter, load_dump

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


class Isolator:
    """Runs a leaf module call on the reference's recorded inputs of that call and saves the
    output as kind ``isolated`` (see module docstring).

    Args:
        reference: reference dump (directory or :class:`~.manifest.Dump`) with module inputs.
        writer: the :class:`~.manifest.DumpWriter` of this setting's dump.
        device: device this setting runs on.
    """

    def __init__(self, reference, writer, device):
        self.ref = reference if isinstance(reference, Dump) else load_dump(reference)
        self.inputs = {}
        for e in self.ref.entries:
            if e.kind == 'input':
                self.inputs.setdefault((e.name, e.call), {})[e.index] = e
        if not self.inputs:
            raise AccuracyError(
                f'the reference dump {self.ref.root} has no module inputs, which isolating '
                'needs: dump it with --dump-inputs (dump_inputs=True), or use `run --isolate`, '
                'which does.')
        self.writer, self.device = writer, device
        self.active = False
        self.calls = 0
        self.seconds = 0.0
        self.skipped = {}

    def _load(self, entry):
        # memory-mapped copy-on-write: pages are read from the page cache as the module
        # touches them, never copied up front; an in-place module (ReLU(inplace=True))
        # writes private copies of the pages it changes, never the reference's file
        t = torch.from_numpy(np.load(self.ref.file_path(entry), mmap_mode='c',
                                     allow_pickle=False))
        dtype = getattr(torch, entry.dtype.replace('torch.', ''), None)
        if isinstance(dtype, torch.dtype) and dtype != t.dtype:
            t = t.to(dtype)  # bfloat16 is saved as float32
        return t.to(self.device)

    def run(self, name, module, args, kwargs, call):
        """Isolated call of ``module`` (call number ``call``); a reason is kept when the
        reference's inputs do not fit this call."""
        label = f'{name}#{call}' if call else name
        recorded = self.inputs.get((name, call))
        flat = flatten_tensors(module_args(args, kwargs))
        if recorded is None:
            self.skipped[label] = 'the reference has no inputs for this call'
            return
        if sorted(recorded) != list(range(len(flat))):
            self.skipped[label] = (f'{len(flat)} input tensors here, {len(recorded)} in the '
                                   'reference')
            return
        t0 = time.perf_counter()
        tensors = [self._load(recorded[i]) for i in range(len(flat))]
        for (path, mine), ref in zip(flat, tensors):
            if tuple(mine.shape) != tuple(ref.shape):
                self.skipped[label] = (f'input {path} has shape {tuple(mine.shape)} here, '
                                       f'{tuple(ref.shape)} in the reference')
                return
        it = iter(tensors)
        new_args = replace_tensors(tuple(args), it)
        new_kwargs = replace_tensors({k: kwargs[k] for k in sorted(kwargs)}, it)
        if next(it, None) is not None:
            self.skipped[label] = 'inputs inside data samples or numpy arrays cannot be replaced'
            return
        self.active = True  # the hooks ignore this call
        try:
            with torch.no_grad():
                out = module(*new_args, **new_kwargs)
        except Exception as e:  # an isolated failure must not stop the dump
            self.skipped[label] = f'{type(e).__name__}: {e}'
            return
        finally:
            self.active = False
        write_tensors(self.writer, name, out, 'isolated', type(module).__name__, call=call)
        self.calls += 1
        self.seconds += time.perf_counter() - t0

    def meta(self):
        return dict(reference=self.ref.root, calls=self.calls, seconds=self.seconds,
                    skipped=self.skipped)


def dump_module(model, inputs, out_dir, setting='fp32', *, forward=None, dump_inputs=False,
                include=None, exclude=None, skip=(), overwrite=False, progress=False,
                seed=0, meta=None, isolate_from=None):
    """Run ``model`` once under ``setting`` and dump every leaf module's outputs to ``out_dir``.

    The model's own inputs (flattened) are saved first as ``__input__`` and its outputs last
    as ``__output__``. A forward that fails part-way (e.g. an op without a float16 kernel)
    still leaves a valid, partial dump (``manifest['error']``) and raises AccuracyError naming
    the module.

    Args:
        model: the ``nn.Module``.
        inputs: a tensor, a tuple of positional arguments, a dict of keyword arguments, or
            anything ``forward(model, inputs)`` accepts.
        out_dir: dump directory.
        setting: a setting name or :class:`~.capture.Setting`.
        forward: ``forward(model, inputs)`` to call instead of ``model(inputs)``.
        dump_inputs: also save each leaf module's inputs (what ``isolate_from`` needs from
            the reference).
        include: regex; hook only leaf modules whose name matches.
        exclude: regex; skip leaf modules whose name matches.
        skip: name prefixes of modules not to hook.
        overwrite: replace a dump already in ``out_dir``.
        progress: show a progress bar.
        seed: torch seed set before the forward.
        meta: extra manifest fields.
        isolate_from: reference dump (with module inputs): also run each module on its
            recorded inputs (error attribution, see module docstring).

    Returns:
        The :class:`~ovkit.accuracy.manifest.Dump` read back.
    """
    s = parse_setting(setting)
    if s.backend == 'onnxruntime':
        from .onnx_dump import dump_onnx
        return dump_onnx(model, inputs, out_dir, forward=forward, include=include,
                         exclude=exclude, skip=skip, overwrite=overwrite, progress=progress,
                         seed=seed, meta=meta, dump_inputs=dump_inputs,
                         isolate_from=isolate_from)
    writer = DumpWriter(out_dir, overwrite)
    leaves = leaf_modules(model, include, exclude, skip)
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    home = param.device if param is not None else torch.device('cpu')
    device = torch.device(s.device)
    iso = Isolator(isolate_from, writer, device) if isolate_from is not None else None
    state = dict(current=None, inside=False, seen=set(), calls={})
    fallback_ops = set()
    prog, ptask = progress_bar(progress, len(leaves), f'dump {s.name}')
    handles = []

    def pre_hook(name):
        def hook(module, args, kwargs):
            if iso is not None and iso.active:
                return
            call = state['calls'][name] = state['calls'].get(name, -1) + 1
            state['current'], state['inside'] = name, True
            if dump_inputs:
                write_tensors(writer, name, module_args(args, kwargs), 'input',
                              type(module).__name__)
            if iso is not None:
                iso.run(name, module, args, kwargs, call)
        return hook

    def post_hook(name):
        def hook(module, args, output):
            if iso is not None and iso.active:
                return
            state['inside'] = False
            write_tensors(writer, name, output, 'output', type(module).__name__)
            if name not in state['seen']:
                state['seen'].add(name)
                prog.update(ptask, advance=1)
        return hook

    error = None
    seconds = None
    try:
        for name, m in leaves:
            handles.append(m.register_forward_pre_hook(pre_hook(name), with_kwargs=True))
            handles.append(m.register_forward_hook(post_hook(name)))
        if device != home:
            model.to(device)
        dev_inputs = to_device(inputs, device)
        write_tensors(writer, MODEL_INPUT, dev_inputs, 'model_input')
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        with prog, torch.no_grad(), setting_context(s, fallback_ops):
            output = call_model(model, dev_inputs, forward)
        seconds = time.perf_counter() - t0
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
                        device=device_name(device), leaf_modules=len(leaves),
                        inputs=describe(inputs), seed=seed, forward_seconds=seconds,
                        **(meta or {}))
        if error:
            all_meta['error'] = error
        if fallback_ops:
            all_meta['fp32_fallback_ops'] = sorted(fallback_ops)
        if iso is not None:
            all_meta['isolation'] = iso.meta()
        writer.close(**all_meta)
    return load_dump(out_dir)


@contextlib.contextmanager
def setting_context(setting, fallback_ops=None):
    """Autocast of a torch setting (nothing for float32) with the float32 fallback of
    extension ops; ``fallback_ops`` (a set) collects the ops that fell back."""
    s = parse_setting(setting)
    if not s.autocast_dtype:
        yield
        return
    with torch.autocast(s.device, dtype=s.autocast_dtype), \
            fp32_fallback_for_extensions(set() if fallback_ops is None else fallback_ops):
        yield
