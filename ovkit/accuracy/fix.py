"""Which modules to keep in float32: a search guided by the error attribution.

:func:`suggest_fp32` dumps the reference (float32, with module inputs) and the low-precision
setting with every module isolated (:mod:`.dump`), ranks the modules by their *own* error
(:func:`~.advisor.own_error_ranking`), and then searches a small set of modules that, run in
float32 while the rest stays in the setting, bring every model output within the threshold:

1. bisection over the ranking: the shortest prefix of the ranking that passes (a prefix that
   passes stays passing when it grows, so log2(n) forward passes find it);
2. pruning: each module of that prefix but the last is dropped again if the output still
   passes without it (one forward pass each).

Each step is one plain forward pass of the model under the setting (no dump, outputs only).
:func:`keep_fp32` applies the result; :func:`fp32_snippet` prints it as code to paste.
"""
import time

import numpy as np
import torch

from .capture import call_model, flatten_tensors, parse_setting, to_device, to_numpy
from .common import finite
from .manifest import MODEL_OUTPUT, AccuracyError
from .metrics import higher_is_better, stream_metrics

_LOW = (torch.float16, torch.bfloat16)


class KeepFp32:
    """Handle of :func:`keep_fp32`; ``remove()`` restores the modules' own forward."""

    def __init__(self, modules):
        self.modules = modules

    def remove(self):
        for m in self.modules:
            m.__dict__.pop('forward', None)
        self.modules = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _to_fp32(x):
    """``x`` with its float16/bfloat16 tensors cast to float32 (containers walked)."""
    if isinstance(x, torch.Tensor):
        return x.float() if x.dtype in _LOW else x
    if isinstance(x, dict):
        return type(x)((k, _to_fp32(v)) for k, v in x.items())
    if isinstance(x, (list, tuple)) and not hasattr(x, '_fields'):
        return type(x)(_to_fp32(v) for v in x)
    return x


def _device_type(args, kwargs):
    for _, t in flatten_tensors([args, kwargs]):
        return t.device.type
    return 'cpu'


def keep_fp32(model, names):
    """Run the named submodules in float32 even under autocast.

    Their forward runs with autocast disabled and float16/bfloat16 inputs cast to float32; the
    rest of the model keeps its setting. Works as a context manager, or call ``remove()``.

    Args:
        model: the model.
        names: submodule names (``model.get_submodule`` paths).

    Returns:
        A :class:`KeepFp32` handle.
    """
    modules = []
    for name in names:
        try:
            m = model.get_submodule(name)
        except AttributeError as e:
            raise AccuracyError(f'keep_fp32: {type(model).__name__} has no submodule {name!r}; '
                                'use names as printed by suggest-fp32 / the CSV') from e
        if 'forward' in m.__dict__:
            continue  # already kept in fp32 (or patched by someone else: leave it)
        forward = m.forward

        def run(*args, _forward=forward, **kwargs):
            args, kwargs = _to_fp32(args), _to_fp32(kwargs)
            with torch.autocast(_device_type(args, kwargs), enabled=False):
                return _forward(*args, **kwargs)

        m.forward = run
        modules.append(m)
    return KeepFp32(modules)


def fp32_snippet(names, setting='fp16', passes=None):
    """Code to paste after the model is built (``model`` in scope): the ovkit one-liner and
    the same in plain PyTorch."""
    s = parse_setting(setting)
    found = f' (found by ovkit suggest-fp32 in {passes} forward passes)' if passes else ''
    lst = '[\n    ' + ',\n    '.join(repr(n) for n in names) + ',\n]' if names else '[]'
    return f'''# keep these modules in float32 under {s.name} autocast{found}
FP32_MODULES = {lst}

# with ovkit installed:
from ovkit.accuracy import keep_fp32
keep_fp32(model, FP32_MODULES)

# or in plain PyTorch (instead of the two lines above):
# import torch
# def _run_in_fp32(module):
#     forward = module.forward
#     def run(*args, **kwargs):
#         up = lambda x: x.float() if torch.is_tensor(x) and x.dtype in (
#             torch.float16, torch.bfloat16) else x
#         with torch.autocast({s.device!r}, enabled=False):
#             return forward(*map(up, args), **{{k: up(v) for k, v in kwargs.items()}})
#     module.forward = run
# for _name in FP32_MODULES:
#     _run_in_fp32(model.get_submodule(_name))
'''


class OutputCheck:
    """Runs the model under a setting with some modules in float32 and says whether every
    model output is within the threshold of the reference outputs.

    Args:
        model: the model.
        inputs: its inputs (as for :func:`~.dump.dump_module`).
        reference: the reference :class:`~.manifest.Dump` (its ``__output__`` tensors).
        setting: the low-precision setting.
        forward: ``forward(model, inputs)``, or None.
        metric: metric compared with ``threshold``.
        threshold: pass/fail split on ``metric``.
        seed: torch seed before each pass (as the dumps use).
    """

    def __init__(self, model, inputs, reference, setting, forward=None,
                 metric='cosine_similarity', threshold=0.99, seed=0):
        self.model, self.inputs, self.forward = model, inputs, forward
        self.setting = parse_setting(setting)
        self.metric, self.threshold, self.seed = metric, threshold, seed
        self.hib = higher_is_better(metric)
        self.ref = [np.load(reference.file_path(e)) for e in reference.entries
                    if e.kind == 'model_output' and e.name == MODEL_OUTPUT]
        self.passes = 0
        self.seconds = 0.0

    def __call__(self, names):
        """(passes, worst metric value over the outputs) with ``names`` kept in float32."""
        from .dump import setting_context
        s = self.setting
        param = next(self.model.parameters(), None)
        home = param.device if param is not None else torch.device('cpu')
        device = torch.device(s.device)
        self.model.eval()
        t0 = time.perf_counter()
        try:
            if device != home:
                self.model.to(device)
            inputs = to_device(self.inputs, device)
            torch.manual_seed(self.seed)
            with keep_fp32(self.model, names), torch.no_grad(), setting_context(s):
                out = [to_numpy(t) for _, t in flatten_tensors(call_model(self.model, inputs,
                                                                          self.forward))]
        finally:
            if device != home:
                self.model.to(home)
        self.passes += 1
        self.seconds += time.perf_counter() - t0
        return self.judge(out)

    def judge(self, outputs):
        if len(outputs) != len(self.ref):
            return False, None
        worst = None
        for a, b in zip(self.ref, outputs):
            if a.shape != b.shape:
                return False, None
            if a.size == 0:
                continue
            m = stream_metrics(a, b)
            if m['nonfinite_new_b']:
                return False, m.get(self.metric)
            v = m.get(self.metric)
            if not finite(v):
                continue
            if worst is None or (v < worst if self.hib else v > worst):
                worst = v
        ok = worst is None or (worst >= self.threshold if self.hib else worst <= self.threshold)
        return ok, worst


def search_fp32(check, ranking):
    """Bisection over the prefixes of ``ranking``, then pruning (see module docstring).

    Args:
        check: an :class:`OutputCheck` (``check(names) -> (ok, worst)``).
        ranking: module names, worst own error first.

    Returns:
        dict(modules, ok, worst, passes, trace): the set found (None when even the whole
        ranking in float32 does not pass) and every pass tried.
    """
    trace = []

    def run(names):
        ok, worst = check(names)
        trace.append(dict(modules=list(names), ok=ok, worst=worst))
        return ok

    def done(modules):
        last = next((t for t in reversed(trace) if t['modules'] == modules), trace[-1])
        return dict(modules=modules, ok=modules is not None, worst=last['worst'],
                    passes=check.passes, trace=trace)

    if run([]):
        return done([])
    if not ranking or not run(list(ranking)):
        return done(None)
    lo, hi = 0, len(ranking)  # prefix lo fails, prefix hi passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run(list(ranking[:mid])):
            hi = mid
        else:
            lo = mid
    chosen = list(ranking[:hi])
    for name in list(chosen[:-1]):  # the last one is needed: the prefix without it failed
        trial = [n for n in chosen if n != name]
        if run(trial):
            chosen = trial
    return done(chosen)


def suggest_fp32(model, inputs, out_dir, setting='fp16', *, forward=None,
                 metric='cosine_similarity', threshold=0.99, skip=(), seed=0, meta=None,
                 progress=False, workers=None):
    """Dump, attribute and search the modules to keep in float32 (see module docstring).

    Args:
        model: the model (float32 weights).
        inputs: its inputs (as for :func:`~.dump.dump_module`).
        out_dir: folder for ``dumps/{fp32,setting}`` (replaced) and the comparison.
        setting: a low-precision torch setting (fp16, bf16, cuda-fp16, cuda-bf16).
        forward: ``forward(model, inputs)``, or None.
        metric: metric the model outputs must meet.
        threshold: pass/fail split on ``metric``.
        skip: name prefixes of modules not to hook (e.g. ``data_preprocessor``).
        seed: torch seed before each forward.
        meta: extra manifest fields of the dumps.
        progress: show progress bars.
        workers: comparison worker processes.

    Returns:
        dict(modules, ok, worst, passes, forward_passes, ranking, snippet, result, seconds):
        ``result`` is the :class:`~.compare.CompareResult` of the isolated comparison,
        ``forward_passes`` counts every forward of the model (2 dumps, the isolation's one
        extra pass, the search).
    """
    import os.path as osp

    from .advisor import own_error_ranking
    from .compare import compare_dumps
    from .dump import dump_module
    s = parse_setting(setting)
    if s.backend != 'torch' or not s.autocast_dtype:
        raise AccuracyError(f'suggest-fp32 needs a low-precision torch setting (fp16, bf16, '
                            f'cuda-fp16, cuda-bf16), not {s.name!r}')
    t0 = time.perf_counter()
    kw = dict(forward=forward, skip=skip, seed=seed, meta=meta, overwrite=True,
              progress=progress)
    ref = dump_module(model, inputs, osp.join(out_dir, 'dumps', 'fp32'), 'fp32',
                      dump_inputs=True, **kw)
    dump_module(model, inputs, osp.join(out_dir, 'dumps', s.name), s, isolate_from=ref, **kw)
    result = compare_dumps(ref.root, osp.join(out_dir, 'dumps', s.name), workers=workers,
                           progress=progress)
    ranking = [r['name'] for r in own_error_ranking(result.rows, metric)]
    check = OutputCheck(model, inputs, ref, s, forward, metric, threshold, seed)
    found = search_fp32(check, ranking)
    found.update(ranking=ranking, result=result, setting=s.name, metric=metric,
                 threshold=threshold, forward_passes=3 + found['passes'],
                 seconds=time.perf_counter() - t0, search_seconds=check.seconds)
    found['snippet'] = (fp32_snippet(found['modules'], s, found['forward_passes'])
                        if found['modules'] else '')
    return found


def fix_finding(found):
    """The search result as an advisor finding (for the terminal, advice.json, HTML)."""
    n = found['forward_passes']
    if found['modules'] == []:
        return dict(rule='fp32_fix', severity='info', modules=[], passes=n,
                    message=f'the outputs already pass ({found["metric"]} threshold '
                            f'{found["threshold"]:g}): nothing to keep in float32',
                    advice='Nothing to do at this threshold.')
    if found['modules'] is None:
        return dict(rule='fp32_fix', severity='error', modules=None, passes=n,
                    message=(f'even with all {len(found["ranking"])} modules that have an own '
                             f'error in float32, the outputs stay off ({found["metric"]} '
                             f'{found["worst"]}); the drift comes from code outside leaf modules'),
                    advice=('Run the forward code between modules (functional ops in forward '
                            'methods, post-processing) in float32, e.g. torch.autocast('
                            'enabled=False) around the parent module, then search again.'))
    return dict(rule='fp32_fix', severity='info', modules=found['modules'], passes=n,
                message=(f'keeping {len(found["modules"])} module(s) in float32 brings every '
                         f'output within the threshold ({found["metric"]} {found["worst"]:.9g}'
                         f'): {", ".join(found["modules"])} (search: {n} forward passes)'),
                advice='Paste this after the model is built:\n' + found['snippet'],
                snippet=found['snippet'])
