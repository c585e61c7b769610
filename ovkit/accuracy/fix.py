"""Which modules to keep in float32: a search guided by the error attribution.

:func:`suggest_fp32` dumps the reference (float32, with module inputs) and the low-precision
setting with every module isolated (:mod:`.dump`), ranks the modules by their *own* error
(:func:`~.advisor.own_error_ranking`), and then searches a small set of modules that, run in
float32 while the rest stays in the setting, bring every model output within the threshold.

The search runs over **blocks**, coarse to fine: the modules the forward pass calls that hold
ranked modules (a ResNet stage, then its residual blocks, then their convolutions), ordered by
their own error energy (:func:`own_error_energy`: the sum over their modules of the isolated
relative error squared, to first order their share of the noise at the output; a new NaN/inf
first). At each level, with the blocks already chosen elsewhere kept:

1. bisection over the prefixes of the ordered blocks: the shortest passing prefix;
2. pruning by halves: the prefix's blocks but the last are dropped in halves while the output
   still passes (one pass when none is needed, about 2 log2 n for one);
3. each chosen block is then replaced by its sub-blocks when they pass without it (one pass;
   a block whose own code between its modules needs float32 stays whole), searched alike.

Every tried set is one plain forward pass of the model under the setting (no dump, outputs
only), never repeated. Checking the output is not monotone in the set (a detector's NMS may
keep another box), so the search returns only sets that passed. ``max_passes`` caps it: it
then returns the passing set tried that runs the fewest ranked modules in float32 (possibly
whole blocks) and says so. :func:`keep_fp32` applies the result; :func:`fp32_snippet` prints
it as code to paste.
"""
import math
import time

import numpy as np
import torch

from .capture import call_model, flatten_tensors, parse_setting, to_device, to_numpy
from .common import DEFAULT_MAX_PASSES, finite
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
        self.called = None  # modules whose forward runs (module(...)), seen by the first pass

    def __call__(self, names):
        """(ok, worst metric value over the outputs) with ``names`` kept in float32."""
        from .dump import setting_context
        s = self.setting
        param = next(self.model.parameters(), None)
        home = param.device if param is not None else torch.device('cpu')
        device = torch.device(s.device)
        self.model.eval()
        t0 = time.perf_counter()
        hooks = []
        try:
            if device != home:
                self.model.to(device)
            inputs = to_device(self.inputs, device)
            torch.manual_seed(self.seed)
            if self.called is None:
                # keep_fp32 replaces forward: a block entered through another method
                # (mmdet's roi_head.predict) would not be kept in float32, so is no block
                self.called = set()
                hooks = [m.register_forward_pre_hook(
                    lambda *_, n=n: self.called.add(n)) for n, m in self.model.named_modules()
                    if n]
            with keep_fp32(self.model, names), torch.no_grad(), setting_context(s):
                out = [to_numpy(t) for _, t in flatten_tensors(call_model(self.model, inputs,
                                                                          self.forward))]
        finally:
            for h in hooks:
                h.remove()
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


def own_error_energy(rows):
    """{module: own error energy} from the isolated columns of comparison rows.

    The energy is the isolated relative error squared, ``|d|^2 / |a|^2`` (the noise the module
    adds relative to its signal, 1 / SQNR): independent rounding errors add up in energy on
    their way to the output, so a block's share of the output's noise is, to first order,
    the sum of its modules' energies. A new NaN/inf (or an overflow) is ``inf``. One value per
    module: its worst output tensor, over every call.
    """
    energy = {}
    for r in rows:
        if r.get('kind') != 'output' or 'isolated_relative_euclidean_distance' not in r:
            continue
        v = r.get('isolated_relative_euclidean_distance')
        if (r.get('isolated_nonfinite_new_b') or 0) > 0 or r.get('isolated_overflow'):
            e = math.inf
        elif finite(v):
            e = float(v) ** 2
        else:
            continue
        energy[r['name']] = max(energy.get(r['name'], 0.0), e)
    return energy


class _Capped(Exception):
    """The pass budget of the search is spent."""


class _Tree:
    """Blocks over the ranked modules: the modules the forward pass calls
    (``module(...)``: keeping them in float32 takes effect) that hold ranked modules, each
    block's children being its nearest such descendants, chains of one child collapsed."""

    def __init__(self, ranking, energy, called):
        self.pos = {n: i for i, n in enumerate(ranking)}
        self.energy = energy or {}
        nodes = set(ranking)
        for leaf in ranking:
            parts = leaf.split('.')
            for k in range(1, len(parts)):
                anc = '.'.join(parts[:k])
                if called is None or anc in called:
                    nodes.add(anc)
        self.kids = {}
        for n in sorted(nodes, key=lambda n: n.count('.')):
            parts = n.split('.')
            parent = next((p for p in ('.'.join(parts[:k]) for k in range(len(parts) - 1, 0, -1))
                           if p in nodes), '')
            self.kids.setdefault(parent, []).append(n)
        self.leaves = {}
        for leaf in ranking:
            parts = leaf.split('.')
            for k in range(1, len(parts) + 1):
                self.leaves.setdefault('.'.join(parts[:k]), []).append(leaf)

    def _collapse(self, node):
        while len(self.kids.get(node, ())) == 1:
            node = self.kids[node][0]
        return node

    def children(self, node):
        """Sub-blocks of ``node`` (``''``: the model), worst first."""
        return self.order([self._collapse(k) for k in self.kids.get(node, ())])

    def order(self, nodes):
        def key(n):
            members = self.leaves[n]
            return (-sum(self.energy.get(m, 0.0) for m in members),
                    min(self.pos[m] for m in members))
        return sorted(nodes, key=key)

    def size(self, names):
        """How many ranked modules ``names`` run in float32."""
        return len({m for n in names for m in self.leaves.get(n, ())})


def search_fp32(check, ranking, energy=None, max_passes=None):
    """Coarse-to-fine search over blocks of the ranked modules (see module docstring).

    Args:
        check: ``check(names) -> (ok, worst)`` with a ``passes`` counter (an
            :class:`OutputCheck`; its ``called`` set, filled by the first pass, says which
            modules the forward calls).
        ranking: module names, worst own error first.
        energy: {name: own error energy} (:func:`own_error_energy`) to order blocks; None
            orders them by their worst module's rank.
        max_passes: stop after this many forward passes with the smallest passing set found
            so far (``capped`` is then True); None: no cap.

    Returns:
        dict(modules, ok, worst, passes, capped, trace): the set found (None when even every
        block in float32 does not pass) and every pass tried.
    """
    trace, seen = [], {}
    state = dict(best=None, capped=False)
    tree = None

    def run(names):
        key = frozenset(names)
        if key in seen:
            return seen[key]
        if max_passes is not None and check.passes >= max_passes:
            raise _Capped
        ok, worst = check(list(names))
        trace.append(dict(modules=list(names), ok=ok, worst=worst))
        seen[key] = ok
        if ok and tree is not None and (state['best'] is None or tree.size(names) <
                                        tree.size(state['best'])):
            state['best'] = list(names)
        return ok

    def drop(fixed, cand, rest):
        """Members of ``cand`` needed on top of ``fixed + rest``; ``fixed + rest + cand``
        passes. Halves first: one pass when none is needed, ~2 log2 n for one."""
        if not cand or run(fixed + rest):
            return []
        if len(cand) == 1:
            return list(cand)
        a, b = cand[:len(cand) // 2], cand[len(cand) // 2:]
        need_b = drop(fixed, b, rest + a)
        return drop(fixed, a, rest + need_b) + need_b

    def reduce(fixed, cands):
        """A small subset of ``cands`` (worst first) that passes with ``fixed``, or None when
        even all of them do not; the empty subset is assumed not to pass."""
        lo, hi, known = 0, len(cands), False
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if run(fixed + cands[:mid]):
                hi, known = mid, True
            else:
                lo = mid
        if not known and not run(fixed + cands):
            return None
        prefix = cands[:hi]
        needed = set(drop(fixed, prefix[:-1], prefix[-1:]))
        return [n for n in prefix[:-1] if n in needed] + prefix[-1:]

    def done(modules):
        last = next((t for t in reversed(trace) if t['modules'] == modules), None)
        return dict(modules=modules, ok=modules is not None,
                    worst=(last or trace[-1])['worst'] if trace else None,
                    passes=check.passes, capped=state['capped'], trace=trace)

    try:
        if run([]):
            return done([])
        tree = _Tree(list(ranking), energy, getattr(check, 'called', None))
        chosen = reduce([], tree.children(''))
        if chosen is None:
            return done(None)
        queue = [n for n in chosen if tree.kids.get(n)]
        while queue:
            node = queue.pop(0)
            others = [n for n in chosen if n != node]
            sub = reduce(others, tree.children(node))
            if sub is None:
                continue  # the block's own code (between its modules) needs float32
            i = chosen.index(node)
            chosen = chosen[:i] + sub + chosen[i + 1:]
            queue += [n for n in sub if tree.kids.get(n)]
    except _Capped:
        state['capped'] = True
        chosen = state['best']
    return done(chosen)


def suggest_fp32(model, inputs, out_dir, setting='fp16', *, forward=None,
                 metric='cosine_similarity', threshold=0.99, skip=(), seed=0, meta=None,
                 progress=False, workers=None, max_passes=DEFAULT_MAX_PASSES):
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
        max_passes: forward passes the search may take (None: no cap); when they run out,
            the smallest passing set found so far is returned, with ``capped`` True.

    Returns:
        dict(modules, ok, worst, passes, capped, forward_passes, ranking, snippet, result,
        seconds):
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
    found = search_fp32(check, ranking, own_error_energy(result.rows), max_passes)
    found.update(ranking=ranking, result=result, setting=s.name, metric=metric,
                 threshold=threshold, max_passes=max_passes, forward_passes=3 + found['passes'],
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
    cap = (f'; the search stopped at its cap of {found["max_passes"]} passes (--max-passes): '
           'a larger cap may find a smaller set' if found.get('capped') else '')
    if found['modules'] is None and found.get('capped'):
        return dict(rule='fp32_fix', severity='error', modules=None, passes=n,
                    message=f'no passing set found within {found["max_passes"]} search passes',
                    advice='Raise --max-passes (max_passes=) and search again.')
    if found['modules'] is None:
        return dict(rule='fp32_fix', severity='error', modules=None, passes=n,
                    message=(f'even with all {len(found["ranking"])} modules that have an own '
                             f'error in float32 (each in its outermost block the forward calls), '
                             f'the outputs stay off ({found["metric"]} {found["worst"]}); the '
                             'drift comes from code outside those blocks'),
                    advice=('Run the forward code between modules (functional ops in forward '
                            'methods, post-processing) in float32, e.g. torch.autocast('
                            'enabled=False) around the parent module, then search again.'))
    return dict(rule='fp32_fix', severity='info', modules=found['modules'], passes=n,
                message=(f'keeping {len(found["modules"])} module(s) in float32 brings every '
                         f'output within the threshold ({found["metric"]} {found["worst"]:.9g}'
                         f'): {", ".join(found["modules"])} (search: {n} forward passes{cap})'),
                advice='Paste this after the model is built:\n' + found['snippet'],
                snippet=found['snippet'])
