"""Compare two dump directories tensor by tensor.

Tensors are matched on (module name, kind, call, output index); A's execution order gives the
op index. Every problem (a tensor on one side only, a shape mismatch, an empty or unreadable
file) becomes a row with a ``reason``: one bad tensor never hides the rest of the report.
Pairs are compared in forked worker processes, largest first; each worker streams its pair
through :func:`ovkit.accuracy.metrics.stream_metrics`, so memory stays at a few chunk buffers.

When dump B holds isolated outputs (``dump_module(..., isolate_from=dump A)``: each module of
B run on A's recorded inputs), each module output row also gets ``isolated_*`` columns: the
error the module introduces itself, next to the error that reached it through the model (the
plain metric columns).
"""
import importlib
import math
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from . import resources
from .common import finite
from .common import progress as progress_bar
from .manifest import AccuracyError, load_dump, open_npy
from .metrics import (
    BUILTIN_METRICS,
    COUNT_COLUMNS,
    EXTRA_METRICS,
    FP16_MAX,
    STAT_COLUMNS,
    finite_pairs,
    grade,
    higher_is_better,
    stream_metrics,
)
from .resources import DEFAULT_CHUNK

ID_COLUMNS = ('op_index', 'name', 'kind', 'call', 'index', 'path', 'module_type', 'shape_a',
              'shape_b', 'dtype_a', 'dtype_b')
TAIL_COLUMNS = ('overflow', 'reason', 'file_a', 'file_b')
# of the isolated comparison, these go to the CSV (every built-in metric is in the row)
ISOLATED_COLUMNS = tuple(f'isolated_{c}' for c in (
    'cosine_similarity', 'relative_euclidean_distance', 'sqnr_db', 'max_absolute_error',
    'max_relative_error', 'error_ratio_1e-3', 'error_ratio_5e-3', 'nonfinite_new_b', 'grade'))
_PARALLEL_MIN_BYTES = 32 << 20  # below this, forking costs more than it saves


def parse_op_range(text):
    """``'start,end,step'`` (end inclusive; any part may be empty) -> (start, end, step)."""
    if text is None or text == '':
        return None
    if isinstance(text, (tuple, list)):
        parts = list(text)
    else:
        parts = [p.strip() for p in str(text).split(',')]
    if not 1 <= len(parts) <= 3:
        raise AccuracyError(f'--range {text!r}: expected start,end,step (e.g. 0,100,1)')
    try:
        vals = [int(p) if p not in ('', None) else None for p in parts]
    except ValueError as e:
        raise AccuracyError(f'--range {text!r}: parts must be integers, e.g. 10,50,2') from e
    vals += [None] * (3 - len(vals))
    start, end, step = vals
    start = 0 if start is None else start
    step = 1 if step is None else step
    if step <= 0 or start < 0 or (end is not None and end < start):
        raise AccuracyError(f'--range {text!r}: need 0 <= start <= end and step >= 1')
    return start, end, step


def _in_range(i, rng):
    if rng is None:
        return True
    start, end, step = rng
    return i >= start and (end is None or i <= end) and (i - start) % step == 0


@dataclass
class CompareResult:
    """Rows in A's execution order (B-only tensors last) plus what produced them."""
    rows: list
    columns: list
    dump_a: object
    dump_b: object
    extra_metrics: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    @property
    def isolated(self):
        """True when B held isolated outputs (the rows have ``isolated_*`` values)."""
        return any('isolated_cosine_similarity' in r for r in self.rows)


def _is_fp16(dtype):
    return str(dtype).replace('torch.', '') in ('float16', 'half')


def _init_worker(plugins):
    # one BLAS thread for the worker's life: restoring the parent's count after each pair
    # would start OpenBLAS threads that spin and take the core from the other worker
    for _, set_threads in resources.openblas_controls():
        set_threads(1)
    for name in plugins:  # spawn start method: re-register plug-in metrics
        importlib.import_module(name)


def _mp_context():
    methods = mp.get_all_start_methods()
    # fork: workers start instantly and inherit registered metrics; they only run numpy
    return mp.get_context('fork' if 'fork' in methods else 'spawn')


_RSS_AT_START = None


def compare_pair(task):
    """Worker: compare two .npy files; never raises, problems become ``reason``.

    Args:
        task: dict(file_a, file_b, chunk, extra (names of extra metrics), trace_memory).

    Returns the metric dict plus shape_a/shape_b, saved dtypes, ``reason`` (list of str) and,
    with ``trace_memory`` (Linux), ``rss_growth_kb``: peak resident memory of this process
    above its level at its first pair (for the benchmark).
    """
    global _RSS_AT_START
    trace = task.get('trace_memory', False)
    if trace and _RSS_AT_START is None:  # first pair in this process
        _RSS_AT_START = resources.status_kb('VmRSS') if resources.reset_peak_rss() else -1
    reasons = []
    out = dict(shape_a=None, shape_b=None, saved_dtype_a='', saved_dtype_b='')
    arrs = {}
    for side in ('a', 'b'):
        path = task.get(f'file_{side}')
        if path is None:
            continue
        try:
            arr = open_npy(path)
        except AccuracyError as e:
            reasons.append(str(e))
            continue
        out[f'shape_{side}'] = list(arr.shape)
        out[f'saved_dtype_{side}'] = str(arr.dtype)
        if arr.dtype.kind not in 'biuf':
            reasons.append(f'{path}: dtype {arr.dtype} is not a real number type; not compared')
            continue
        arrs[side] = arr
    if len(arrs) == 2:
        _compare_arrays(arrs['a'], arrs['b'], task, out, reasons)
    arrs.clear()
    out['reason'] = reasons
    if trace and _RSS_AT_START >= 0:
        out['rss_growth_kb'] = max(0, resources.status_kb('VmHWM') - _RSS_AT_START)
    return out


def _compare_arrays(a, b, task, out, reasons):
    if a.shape != b.shape:
        reasons.append(f'shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}: not compared')
        return
    if a.size == 0:
        reasons.append('empty tensor (0 elements): nothing to compare')
        return
    if a.dtype.kind != b.dtype.kind:
        reasons.append(f'dtype kinds differ ({a.dtype} vs {b.dtype}); compared as float64')
    out.update(stream_metrics(a, b, task.get('chunk', DEFAULT_CHUNK)))
    for name in task.get('extra', ()):
        spec = EXTRA_METRICS.get(name)
        if spec is None:
            reasons.append(f'extra metric {name!r} is not registered in the worker; pass its '
                           'module with --metric-plugin')
            out[name] = math.nan
            continue
        A, B = finite_pairs(a, b)
        try:
            out[name] = float(spec.fn(A, B)) if A.size else math.nan
        except Exception as e:  # a plug-in's bug must not kill the report
            out[name] = math.nan
            reasons.append(f'metric {name} failed: {type(e).__name__}: {e}')


def run_tasks(tasks, workers=None, show_progress=False, plugins=(), description='comparing'):
    """Run :func:`compare_pair` on every task; results in task order.

    Args:
        tasks: task dicts for :func:`compare_pair` (``bytes`` orders and sizes the work).
        workers: processes (default: all cores); 0 or 1 compares in this process.
        show_progress: show a progress bar.
        plugins: modules that register extra metrics, imported in each worker.
        description: label of the progress bar.
    """
    sizes = [t.get('bytes', 0) for t in tasks]
    total = sum(sizes)
    if workers is None:
        workers = os.cpu_count() or 1
    workers = min(workers, len(tasks))
    results = [None] * len(tasks)
    if workers <= 1 or total < _PARALLEL_MIN_BYTES:
        prog, ptask = progress_bar(show_progress, total, description, transfer=True)
        with prog:
            for i, t in enumerate(tasks):
                results[i] = compare_pair(t)
                prog.update(ptask, advance=sizes[i])
        return results, 1
    order = sorted(range(len(tasks)), key=lambda i: -sizes[i])
    with ProcessPoolExecutor(workers, mp_context=_mp_context(), initializer=_init_worker,
                             initargs=(tuple(plugins),)) as pool:
        # the first submit forks every worker, before the progress bar starts its thread
        futures = {pool.submit(compare_pair, tasks[order[0]]): order[0]}
        prog, ptask = progress_bar(show_progress, total, description, transfer=True)
        with prog:
            futures.update({pool.submit(compare_pair, tasks[i]): i for i in order[1:]})
            for fut in as_completed(futures):
                i = futures[fut]
                results[i] = fut.result()
                prog.update(ptask, advance=sizes[i])
    return results, workers


def _file_bytes(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _base_row(op_index, ea, eb):
    e = ea or eb
    return dict(op_index=op_index, name=e.name, kind=e.kind, call=e.call, index=e.index,
                path=e.path, module_type=e.module_type,
                shape_a=list(ea.shape) if ea else None, shape_b=list(eb.shape) if eb else None,
                dtype_a=ea.dtype if ea else '', dtype_b=eb.dtype if eb else '')


def compare_dumps(dir_a, dir_b, op_range=None, workers=None, chunk=DEFAULT_CHUNK,
                  extra_metrics=None, fp16_max=FP16_MAX, progress=False, plugins=(),
                  trace_memory=False):
    """Compare dump ``dir_a`` (reference) with ``dir_b``; returns a :class:`CompareResult`.

    Args:
        dir_a: reference dump directory.
        dir_b: dump to check (its isolated outputs, if any, become ``isolated_*`` columns).
        op_range: ``'start,end,step'`` or a tuple on A's op index (end inclusive); tensors
            only in B are left out when a range is given.
        workers: worker processes (default: all cores).
        chunk: elements per streaming chunk.
        extra_metrics: names registered with :func:`ovkit.accuracy.register_metric`
            (default: all registered).
        fp16_max: magnitude treated as fp16 overflow.
        progress: show a progress bar.
        plugins: modules to import that register extra metrics.
        trace_memory: measure each worker's peak resident memory growth
            (``stats['worker_rss_growth_kb']``).
    """
    global _RSS_AT_START
    for name in plugins:
        importlib.import_module(name)
    dump_a, dump_b = load_dump(dir_a), load_dump(dir_b)
    rng = parse_op_range(op_range)
    extra = list(EXTRA_METRICS) if extra_metrics is None else list(extra_metrics)
    unknown = [m for m in extra if m not in EXTRA_METRICS]
    if unknown:
        raise AccuracyError(f'extra metric(s) {unknown} are not registered; register them with '
                            'ovkit.accuracy.register_metric or pass --metric-plugin MODULE')
    warnings = setup_differences(dump_a, dump_b)
    entries_a, entries_b = _matchable(dump_a, dump_b, warnings)
    isolated = {(e.name, 'output', e.call, e.index): e for e in dump_b.entries
                if e.kind == 'isolated'}
    b_by_key = {}
    for e in entries_b:
        b_by_key.setdefault(e.key, e)
    used_b = set()
    rows, tasks, task_rows = [], [], []

    def add_task(row, file_a, file_b, isolated_entry=None):
        tasks.append(dict(file_a=file_a, file_b=file_b, chunk=chunk, extra=extra,
                          bytes=_file_bytes(file_a) + _file_bytes(file_b),
                          trace_memory=trace_memory))
        task_rows.append((row, isolated_entry))

    for ea in entries_a:
        i = ea.order
        eb = b_by_key.get(ea.key)
        if eb is not None:
            used_b.add(ea.key)
        if not _in_range(i, rng):
            continue
        row = _base_row(i, ea, eb)
        row['file_a'] = dump_a.file_path(ea)
        row['file_b'] = dump_b.file_path(eb) if eb else ''
        rows.append(row)
        if eb is None:
            row['reason'] = [f'only in A: {dump_b.root} has no {ea.label}']
        else:
            add_task(row, row['file_a'], row['file_b'])
        if ea.key in isolated:
            e_iso = isolated[ea.key]
            add_task(row, row['file_a'], dump_b.file_path(e_iso), e_iso)
    if rng is None:
        for eb in entries_b:
            if eb.key not in used_b:
                row = _base_row(None, None, eb)
                row.update(file_a='', file_b=dump_b.file_path(eb),
                           reason=[f'only in B: {dump_a.root} has no {eb.label}'])
                rows.append(row)
    if not rows:
        raise AccuracyError(f'--range {op_range!r} selects no tensor: dump A ({dir_a}) has '
                            f'op indices 0..{len(dump_a.entries) - 1}')
    t0 = time.perf_counter()
    results, used_workers = run_tasks(tasks, workers, progress, plugins)
    seconds = time.perf_counter() - t0
    rss_growth = max((r.pop('rss_growth_kb', 0) for r in results), default=0)
    if trace_memory:  # a later comparison in this process measures afresh
        _RSS_AT_START = None
    for (row, e_iso), res in zip(task_rows, results):
        if e_iso is None:
            _merge(row, res, fp16_max)
        else:
            _merge_isolated(row, res, e_iso.dtype, fp16_max)
    for row in rows:
        for col in list(BUILTIN_METRICS) + list(STAT_COLUMNS) + list(COUNT_COLUMNS) + extra:
            row.setdefault(col, math.nan)
        if not finite(row.get('numel')):
            row['numel'] = _numel(row.get('shape_a') or row.get('shape_b'))
        row.setdefault('overflow', False)
        row['grade'] = grade(row)
        row['reason'] = '; '.join(row.get('reason') or [])
    columns = (list(ID_COLUMNS) + ['numel', 'compared'] + list(BUILTIN_METRICS) + ['grade'] +
               extra + (list(ISOLATED_COLUMNS) if isolated else []) + list(STAT_COLUMNS) +
               [c for c in COUNT_COLUMNS if c not in ('numel', 'compared')] + list(TAIL_COLUMNS))
    nbytes = sum(t['bytes'] for t in tasks)
    stats = dict(pairs=len(tasks), bytes=nbytes, seconds=seconds, workers=used_workers,
                 gb_per_s=nbytes / seconds / 1e9 if seconds > 0 else math.nan,
                 worker_rss_growth_kb=rss_growth, warnings=warnings)
    return CompareResult(rows, columns, dump_a, dump_b, extra, stats)


def _matchable(dump_a, dump_b, warnings):
    """Entries of A and B to match: isolated outputs are no rows of their own, and module
    inputs dumped on one side only (A dumped with inputs for the attribution) are left out."""
    has_inputs = [any(e.kind == 'input' for e in d.entries) for d in (dump_a, dump_b)]
    drop = {'isolated'}
    if has_inputs[0] != has_inputs[1]:
        drop.add('input')
        warnings.append(f'module inputs are dumped in {"A" if has_inputs[0] else "B"} only: '
                        'they are not compared (dump both with --dump-inputs to compare them)')
    return ([e for e in d.entries if e.kind not in drop] for d in (dump_a, dump_b))


def setup_differences(dump_a, dump_b):
    """What differs between the two runs besides the setting (mode, input, config, weights),
    as warnings: such dumps still compare, but their differences are not all precision."""
    out = []
    for key in ('mode', 'config', 'checkpoint', 'input', 'seed'):
        va, vb = dump_a.meta.get(key), dump_b.meta.get(key)
        if va is not None and vb is not None and va != vb:
            out.append(f'the dumps differ in {key}: {va!r} (A) vs {vb!r} (B)')
    if dump_b.meta.get('error'):
        out.append(f'dump B is partial: {dump_b.meta["error"]}')
    if dump_a.meta.get('error'):
        out.append(f'dump A is partial: {dump_a.meta["error"]}')
    skipped = (dump_b.meta.get('isolation') or {}).get('skipped') or {}
    if skipped:
        shown = '; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:5])
        out.append(f'{len(skipped)} module call(s) of B could not be isolated (no isolated_* '
                   f'values): {shown}' + (' ...' if len(skipped) > 5 else ''))
    for side, d in (('A', dump_a), ('B', dump_b)):
        if d.meta.get('fp32_fallback_ops'):
            out.append(f'in dump {side}, extension ops without low-precision kernels ran in '
                       f'float32: {", ".join(d.meta["fp32_fallback_ops"])}')
    return out


def _numel(shape):
    if shape is None:
        return math.nan
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _merge_isolated(row, res, dtype_b, fp16_max):
    """Metrics of A's output vs B's module run on A's inputs, as ``isolated_*`` columns."""
    iso = dict(dtype_a=row['dtype_a'], dtype_b=dtype_b)
    _merge(iso, res, fp16_max)
    for k in list(BUILTIN_METRICS) + ['nonfinite_new_b', 'overflow']:
        row[f'isolated_{k}'] = iso.get(k, math.nan)
    row['isolated_grade'] = grade(iso)
    if iso['reason']:
        row.setdefault('reason', []).append('isolated: ' + '; '.join(iso['reason']))


def _merge(row, res, fp16_max):
    reasons = list(res.pop('reason'))
    for side in ('a', 'b'):
        shape, saved = res.pop(f'shape_{side}'), res.pop(f'saved_dtype_{side}')
        if shape is not None:
            row[f'shape_{side}'] = shape
        if not row[f'dtype_{side}']:
            row[f'dtype_{side}'] = saved
    row.update(res)
    new_nf = res.get('nonfinite_new_b', 0) or 0
    overflow = False
    if new_nf:
        overflow = True
        reasons.append(f'B has {new_nf} NaN/inf where A is finite')
    absmax_a = res.get('absmax_a')
    if _is_fp16(row['dtype_b']) and finite(absmax_a) and absmax_a > fp16_max:
        overflow = True
        reasons.append(f'A reaches |x| = {absmax_a:.6g}, beyond the fp16 range {fp16_max:g}')
    nf_a = (res.get('nan_a') or 0) + (res.get('inf_a') or 0)
    if nf_a:
        reasons.append(f'A has {res["nan_a"]} NaN and {res["inf_a"]} inf (skipped by metrics)')
    if finite(res.get('compared')) and res.get('numel') and res['compared'] == 0:
        reasons.append('no position is finite on both sides: metrics undefined')
    row['overflow'] = overflow
    row['reason'] = reasons


def worst_rows(result, metric='cosine_similarity', top=20):
    """Compared rows sorted worst first by ``metric``."""
    rows = [r for r in result.rows if finite(r.get(metric))]
    hib = higher_is_better(metric)
    rows.sort(key=lambda r: (r[metric] if hib else -r[metric], r['op_index'] or 0))
    return rows[:top]
