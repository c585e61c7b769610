"""Expert advice from a comparison: which rule fires, where, and what to do about it.

Rules (thresholds are arguments / CLI flags with these defaults):

* ``missing_outputs`` (error): B lacks model outputs that A has (the result is not compared).
* ``fp16_overflow`` (error): some tensor overflows: B is float16 and has NaN/inf where A is
  finite, or A's magnitude exceeds the fp16 range (``--fp16-max``, 65504).
* ``non_finite`` (error): B is not float16 and has NaN/inf where A is finite.
* ``input_inconsistency`` (error): the first tensor (the model input) differs: cosine
  similarity below ``--input-threshold`` (0.99) or a shape mismatch. Everything after it is
  then not comparable.
* Global consistency on ``--metric`` (cosine_similarity) against ``--threshold`` (0.99):

  - ``problem_node`` (error): the final output is beyond the threshold; the problem node is
    the first tensor from which every later tensor stays beyond it (the start of the bad tail).
  - ``single_point_deviation`` (warning): some tensors are beyond the threshold but the final
    output is within it: the model recovers, usually harmless.
  - ``all_consistent`` (info): every compared tensor is within the threshold.

* ``error_sources`` (only with isolated outputs, ``--isolate``): the modules whose *own* error
  is largest (module run alone on the reference's inputs; a new NaN/inf first, then the
  isolated ``--metric``): error when the final output is off and the worst module alone is
  beyond the threshold, warning when it is beyond but the output recovers, or when the
  output is off while no module alone is (many small errors add up), info otherwise.

Each rule is one function ``rule_*(ctx)`` returning a finding or None; :data:`RULES` lists
them in the order they are applied.
"""
import json
from dataclasses import dataclass

from .common import finite as _finite
from .common import make_console
from .common import row_label as _label
from .metrics import FP16_MAX, higher_is_better

DEFAULT_THRESHOLD = 0.99
DEFAULT_INPUT_THRESHOLD = 0.99


def _ref(r, metric):
    return dict(op_index=r['op_index'], tensor=_label(r), module_type=r.get('module_type', ''),
                value=r.get(metric) if _finite(r.get(metric)) else None,
                reason=r.get('reason', ''))


def _setting_dtype(setting_b):
    # dumps from other tools carry only a name (often the directory name): infer from it
    name = str(setting_b.get('name', '')).lower()
    return setting_b.get('dtype') or ('float16' if ('fp16' in name or 'half' in name) else
                                      'bfloat16' if 'bf16' in name else 'float32')


def _low_precision_hint(setting_b):
    name = str(setting_b.get('name', '')).lower()
    backend = setting_b.get('backend') or 'torch'
    if backend not in ('torch', 'onnxruntime') and ('onnx' in name or 'ort' in name):
        backend = 'onnxruntime'
    dtype = _setting_dtype(setting_b)
    if backend == 'onnxruntime':
        return ('compare the exported op with its PyTorch module (opset, align_corners, '
                'rounding modes, constant folding); re-export with a newer opset or replace '
                'the op')
    if dtype == 'float16':
        return ('run that module in float32 (wrap it in torch.autocast(device_type, '
                'enabled=False) and cast its input with .float()), or use bf16 (fp32 range) '
                'for it')
    if dtype == 'bfloat16':
        return ('run that module in float32 (wrap it in torch.autocast(device_type, '
                'enabled=False) and cast its input with .float()); bf16 keeps only 8 '
                'mantissa bits, fp16 keeps 11 if the range allows')
    return ('check device-specific kernels of that module (e.g. torch.backends.cudnn / TF32 '
            'settings, deterministic algorithms)')


@dataclass
class Context:
    """What every rule reads: the comparison and the thresholds, with derived row lists.

    Args:
        result: the :class:`~ovkit.accuracy.compare.CompareResult`.
        metric: metric of the consistency rules.
        threshold: good/bad split on ``metric``.
        input_threshold: cosine below which the model inputs are inconsistent.
        fp16_max: magnitude treated as fp16 overflow.
    """
    result: object
    metric: str
    threshold: float
    input_threshold: float
    fp16_max: float

    def __post_init__(self):
        self.hib = higher_is_better(self.metric)
        self.rows = self.result.rows
        self.ordered = [r for r in self.rows if r['op_index'] is not None]
        self.scored = [r for r in self.ordered if _finite(r.get(self.metric))]
        outputs = [r for r in self.ordered if r['kind'] == 'model_output']
        self.out_bad = [r for r in outputs if self.bad(r) or _mismatch(r)]
        self.final_rows = outputs if outputs else self.scored[-1:]
        self.final_is_bad = (bool(self.out_bad) if outputs
                             else any(self.bad(r) for r in self.final_rows))
        self.bad_rows = [r for r in self.scored if self.bad(r)]
        self.crit = f'{self.metric} {"<" if self.hib else ">"} {self.threshold:.10g}'

    def bad(self, r, prefix=''):
        v = r.get(prefix + self.metric)
        return _finite(v) and (v < self.threshold if self.hib else v > self.threshold)


def _what(r):
    """Module type of a row, or what the tensor is when no module made it."""
    kinds = dict(model_output='model output', model_input='model input')
    return r.get('module_type') or kinds.get(r.get('kind'), '?')


def _mismatch(r):
    return 'shape mismatch' in (r.get('reason') or '')


def _fp16_run(ctx, r):
    """Whether B ran this tensor in float16: only then is a new NaN/inf an fp16 overflow."""
    return (str(r.get('dtype_b')).replace('torch.', '') in ('float16', 'half')
            or _setting_dtype(ctx.result.dump_b.meta.get('setting', {})) == 'float16')


def rule_missing_outputs(ctx):
    """B lacks model outputs of A: nothing can be said about the result (issue 8)."""
    outputs = [r for r in ctx.ordered if r['kind'] == 'model_output']
    missing = [r for r in outputs if not r.get('file_b')]
    if not missing:
        return None
    return dict(
        rule='missing_outputs', severity='error', count=len(missing),
        tensors=[_ref(r, ctx.metric) for r in missing[:20]],
        message=(f'{ctx.result.dump_b.root} lacks {len(missing)} of the {len(outputs)} model '
                 f'outputs of {ctx.result.dump_a.root} '
                 f'({", ".join(_label(r) for r in missing[:5])}): the result is not compared'),
        advice=('Dump B again with the same config, --input and --mode as A; a dump that '
                'stopped early (a crash, --range) or ran another mode has no outputs to check.'))


def rule_non_finite(ctx):
    """B has NaN/inf where A is finite and B is not a float16 run: report NaN as NaN."""
    bad = [r for r in ctx.rows if r.get('overflow') and not _fp16_run(ctx, r)]
    if not bad:
        return None
    first = bad[0]
    return dict(
        rule='non_finite', severity='error', count=len(bad),
        first=_ref(first, ctx.metric), tensors=[_ref(r, ctx.metric) for r in bad[:20]],
        message=(f'{len(bad)} tensor(s) are NaN/inf in {ctx.result.dump_b.setting} where A is '
                 f'finite; first at op {first["op_index"]} {_label(first)} ({_what(first)}): '
                 f'{first.get("reason")}'),
        advice=('B is not a float16 run, so this is no fp16 overflow: look in that module for '
                '0/0, log or sqrt of non-positive values, or NaN already in its weights or '
                'inputs (dump with --isolate to see whether the module makes it itself).'))


def rule_fp16_overflow(ctx):
    over = [r for r in ctx.rows if r.get('overflow') and _fp16_run(ctx, r)]
    if not over:
        return None
    first = over[0]
    return dict(
        rule='fp16_overflow', severity='error', count=len(over),
        first=_ref(first, ctx.metric), tensors=[_ref(r, ctx.metric) for r in over[:20]],
        message=(f'{len(over)} tensor(s) overflow in {ctx.result.dump_b.setting}; first at op '
                 f'{first["op_index"]} {_label(first)} ({_what(first)}): '
                 f'{first.get("reason")}'),
        advice=('Values beyond the fp16 range (|x| > %g) become inf and then NaN. Keep %s and '
                'everything that produces large values (exp, sum of squares, attention logits) '
                'in float32 (torch.autocast(enabled=False) around it), use bf16 (fp32 range), '
                'or rescale its input.' % (ctx.fp16_max, _label(first))))


def rule_input_inconsistency(ctx):
    """The first tensor in execution order (the model input) must agree."""
    if not ctx.ordered:
        return None
    first = ctx.ordered[0]
    cos = first.get('cosine_similarity')
    if not (_mismatch(first) or (_finite(cos) and cos < ctx.input_threshold)):
        return None
    what = 'shapes differ' if _mismatch(first) else f'cosine similarity {cos:.6f}'
    return dict(
        rule='input_inconsistency', severity='error', first=_ref(first, ctx.metric),
        message=(f'the inputs differ ({_label(first)}: {what} < {ctx.input_threshold:.10g}); '
                 'later differences are not meaningful until this is fixed'),
        advice=('Feed both runs the same file through the same pipeline: same config (resize, '
                'mean/std, padding), same --input, same seed. If the input was meant to change, '
                'compare from the first module instead (--range 1,).'))


def rule_problem_node(ctx):
    """The final output is off: name the start of the bad tail."""
    if not ctx.final_is_bad:
        return None
    internal = [r for r in ctx.scored if r['kind'] != 'model_output']
    k = len(internal)
    while k > 0 and ctx.bad(internal[k - 1]):
        k -= 1
    node = internal[k] if k < len(internal) else (ctx.out_bad or ctx.final_rows)[0]
    earlier = [r for r in ctx.bad_rows if r['op_index'] < node['op_index']]
    before = [r for r in ctx.scored if r['op_index'] < node['op_index']]
    upstream = ''
    if before and not ctx.bad(before[-1]) and node['kind'] != 'input':
        upstream = (f' The tensor before it ({_label(before[-1])}) is still within the '
                    'threshold: the change happens in this module or in code between modules '
                    'that feeds it (e.g. NMS / top-k choosing proposals); re-run the dump with '
                    '--dump-inputs to compare its inputs too, or --isolate to measure the '
                    "module's own error.")
    if node['kind'] == 'input':
        start = (f'The input of {node["name"]} differs while the tensors before it agree: the '
                 'cause is the code between modules that computes it (e.g. box decoding, NMS '
                 'or top-k choosing proposals): make it run in float32 '
                 '(torch.autocast(device_type, enabled=False) around it, inputs .float())')
    else:
        start = (f'Start at {_label(node)}: '
                 f'{_low_precision_hint(ctx.result.dump_b.meta.get("setting", {}))}')
    return dict(
        rule='problem_node', severity='error', node=_ref(node, ctx.metric),
        first_deviation=_ref(earlier[0], ctx.metric) if earlier else None,
        final=[_ref(r, ctx.metric) for r in ctx.final_rows],
        message=(f'the final output is off ({ctx.crit}); from op {node["op_index"]} '
                 f'{_label(node)} ({_what(node)}) on, every tensor is off'
                 + (f' (earlier isolated deviations from op {earlier[0]["op_index"]})'
                    if earlier else '')),
        advice=f'{start}; then re-run the comparison to see whether the output recovers.'
               + upstream)


def rule_single_point_deviation(ctx):
    if ctx.final_is_bad or not ctx.bad_rows:
        return None
    bad = ctx.bad_rows
    return dict(
        rule='single_point_deviation', severity='warning', count=len(bad),
        tensors=[_ref(r, ctx.metric) for r in bad[:20]],
        message=(f'{len(bad)} tensor(s) have {ctx.crit} but the final output is within the '
                 f'threshold; first at op {bad[0]["op_index"]} {_label(bad[0])}'),
        advice=('The model recovers from these deviations (e.g. a ReLU, max-pool or '
                'normalisation absorbs them); act only if the task metric drops, starting with '
                'the worst of them.'))


def rule_all_consistent(ctx):
    if ctx.final_is_bad or ctx.bad_rows or not ctx.scored or rule_missing_outputs(ctx):
        return None
    return dict(
        rule='all_consistent', severity='info', count=len(ctx.scored),
        message=(f'all {len(ctx.scored)} compared tensors are within {ctx.metric} threshold '
                 f'{ctx.threshold:.10g}'),
        advice='Nothing to do at this threshold; tighten --threshold to look closer.')


def own_error_ranking(rows, metric='cosine_similarity'):
    """Module output rows with an isolated error, worst own error first, one per module.

    A new NaN/inf in the isolated output ranks first; then the isolated ``metric``. Modules
    whose isolated output equals the reference exactly are left out.
    """
    hib = higher_is_better(metric)
    key_col = f'isolated_{metric}'
    ranked = []
    for r in rows:
        if r.get('kind') != 'output' or key_col not in r:
            continue
        new_nf = (r.get('isolated_nonfinite_new_b') or 0) > 0 or bool(r.get('isolated_overflow'))
        v = r.get(key_col)
        if not new_nf and (not _finite(v) or r.get('isolated_max_absolute_error') == 0):
            continue
        score = v if _finite(v) else (-float('inf') if hib else float('inf'))
        ranked.append(((0 if new_nf else 1, score if hib else -score, r['op_index']), r))
    ranked.sort(key=lambda x: x[0])
    seen, out = set(), []
    for _, r in ranked:
        if r['name'] not in seen:
            seen.add(r['name'])
            out.append(r)
    return out


def _error_text(r, prefix=''):
    """Readable size of an error: new NaN/inf, else SQNR in dB (else the cosine)."""
    if (r.get(prefix + 'nonfinite_new_b') or 0) > 0:
        return f'{r[prefix + "nonfinite_new_b"]} new NaN/inf'
    v = r.get(prefix + 'sqnr_db')
    if isinstance(v, float) and v == v:
        return f'SQNR {v:.1f} dB'
    return f'cosine {r.get(prefix + "cosine_similarity")}'


def rule_error_sources(ctx, top=5):
    """With isolated outputs: the modules whose own error is largest."""
    ranked = own_error_ranking(ctx.rows, ctx.metric)
    if not ranked:
        return None
    worst = ranked[0]
    worst_bad = ctx.bad(worst, 'isolated_') or (worst.get('isolated_nonfinite_new_b') or 0) > 0
    if ctx.final_is_bad and worst_bad:
        severity, lead = 'error', 'these modules cause the drift themselves'
    elif worst_bad:
        severity, lead = 'warning', 'these modules are off on their own, the output recovers'
    elif ctx.final_is_bad:
        severity, lead = 'warning', ('no module alone is beyond the threshold: many small '
                                     'errors add up; the largest own errors are')
    else:
        severity, lead = 'info', 'largest own errors (all within the threshold)'
    names = [r['name'] for r in ranked[:top]]
    parts = [f'{_label(r)} ({_what(r)}): own {_error_text(r, "isolated_")}'
             f', propagated {_error_text(r)}' for r in ranked[:top]]
    return dict(
        rule='error_sources', severity=severity, modules=names,
        tensors=[dict(_ref(r, ctx.metric), isolated=r.get('isolated_' + ctx.metric),
                      isolated_nonfinite_new_b=r.get('isolated_nonfinite_new_b'))
                 for r in ranked[:20]],
        message=f'{lead}: ' + '; '.join(parts),
        advice=('Each module here was run alone, in the low-precision setting, on the '
                "reference's own inputs: its error is its own, not inherited. Keep the first "
                'ones in float32 (ovkit.accuracy.keep_fp32(model, [...])); '
                '`compare_accuracy.py suggest-fp32` searches the smallest such set that brings '
                'the output within the threshold.'))


RULES = (rule_missing_outputs, rule_fp16_overflow, rule_non_finite, rule_input_inconsistency,
         rule_problem_node,
         rule_single_point_deviation, rule_all_consistent, rule_error_sources)


def advise(result, metric='cosine_similarity', threshold=DEFAULT_THRESHOLD,
           input_threshold=DEFAULT_INPUT_THRESHOLD, fp16_max=FP16_MAX):
    """Apply every rule of :data:`RULES` to a comparison.

    Args:
        result: a :class:`~ovkit.accuracy.compare.CompareResult`.
        metric: metric of the consistency rules.
        threshold: good/bad split on ``metric``.
        input_threshold: cosine below which the model inputs are inconsistent.
        fp16_max: magnitude treated as fp16 overflow.

    Returns:
        A dict ready for JSON: ``findings`` worst first, ``summary`` one line.
    """
    ctx = Context(result, metric, threshold, input_threshold, fp16_max)
    findings = [f for f in (rule(ctx) for rule in RULES) if f is not None]
    severity_order = dict(error=0, warning=1, info=2)
    findings.sort(key=lambda f: severity_order[f['severity']])
    not_compared = [r for r in ctx.rows if not _finite(r.get(metric))]
    summary = '; '.join(f['rule'] for f in findings) or 'no tensor could be compared'
    return dict(summary=summary, metric=metric, threshold=threshold,
                input_threshold=input_threshold, fp16_max=fp16_max,
                dump_a=result.dump_a.root, dump_b=result.dump_b.root,
                setting_a=result.dump_a.setting, setting_b=result.dump_b.setting,
                compared=len(ctx.scored), not_compared=len(not_compared),
                warnings=list(result.stats.get('warnings', [])), findings=findings)


def problem_row(result, advice):
    """The row to inspect first: the problem node, else the first overflow, else the worst
    single-point deviation; None when every tensor is consistent."""
    by_rule = {f['rule']: f for f in advice['findings']}
    ref = None
    if 'problem_node' in by_rule:
        ref = by_rule['problem_node']['node']
    elif 'fp16_overflow' in by_rule or 'non_finite' in by_rule:
        ref = (by_rule.get('fp16_overflow') or by_rule['non_finite'])['first']
    elif 'single_point_deviation' in by_rule:
        hib = higher_is_better(advice['metric'])
        refs = by_rule['single_point_deviation']['tensors']
        ref = sorted(refs, key=lambda t: t['value'] if hib else -t['value'])[0]
    if ref is None or ref.get('op_index') is None:
        return None
    return next((r for r in result.rows if r['op_index'] == ref['op_index']), None)


def save_advice(advice, path):
    with open(path, 'w') as f:
        json.dump(advice, f, indent=2, default=str)
    return path


def print_advice(advice, console=None):
    from rich.panel import Panel
    console = console or make_console()
    colours = dict(error='red', warning='yellow', info='green')
    lines = []
    for f in advice['findings']:
        c = colours[f['severity']]
        lines.append(f'[{c}][bold]{f["severity"].upper()} {f["rule"]}[/bold][/{c}]: '
                     f'{f["message"]}\n  -> {f["advice"]}')
    if not lines:
        lines.append('no tensor could be compared: see the reasons in the CSV')
    for w in advice.get('warnings', []):
        lines.append(f'[yellow]note[/yellow]: {w}')
    console.print(Panel('\n'.join(lines), title=f'advice: {advice["setting_a"]} vs '
                                                f'{advice["setting_b"]}', expand=False))
