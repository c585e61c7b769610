"""Expert advice from a comparison: which rule fires, where, and what to do about it.

Rules (thresholds are arguments / CLI flags with these defaults):

* ``fp16_overflow`` (error): some tensor overflows: B has NaN/inf where A is finite, or B is
  float16 and A's magnitude exceeds the fp16 range (``--fp16-max``, 65504).
* ``input_inconsistency`` (error): the first tensor (the model input) differs: cosine
  similarity below ``--input-threshold`` (0.99) or a shape mismatch. Everything after it is
  then not comparable.
* Global consistency on ``--metric`` (cosine_similarity) against ``--threshold`` (0.99):

  - ``problem_node`` (error): the final output is beyond the threshold; the problem node is
    the first tensor from which every later tensor stays beyond it (the start of the bad tail).
  - ``single_point_deviation`` (warning): some tensors are beyond the threshold but the final
    output is within it: the model recovers, usually harmless.
  - ``all_consistent`` (info): every compared tensor is within the threshold.
"""
import json
import math

from .metrics import FP16_MAX, higher_is_better

DEFAULT_THRESHOLD = 0.99
DEFAULT_INPUT_THRESHOLD = 0.99


def _finite(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _label(r):
    call = f'#{r["call"]}' if r.get('call') else ''
    kind = '.input' if r.get('kind') == 'input' else ''
    return f'{r["name"]}{kind}{call}[{r["index"]}]'


def _ref(r, metric):
    return dict(op_index=r['op_index'], tensor=_label(r), module_type=r.get('module_type', ''),
                value=r.get(metric) if _finite(r.get(metric)) else None,
                reason=r.get('reason', ''))


def _low_precision_hint(setting_b):
    # dumps from other tools carry only a name (often the directory name): infer from it
    name = str(setting_b.get('name', '')).lower()
    backend = setting_b.get('backend') or 'torch'
    if backend not in ('torch', 'onnxruntime') and ('onnx' in name or 'ort' in name):
        backend = 'onnxruntime'
    dtype = setting_b.get('dtype') or ('float16' if ('fp16' in name or 'half' in name) else
                                       'bfloat16' if 'bf16' in name else 'float32')
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


def advise(result, metric='cosine_similarity', threshold=DEFAULT_THRESHOLD,
           input_threshold=DEFAULT_INPUT_THRESHOLD, fp16_max=FP16_MAX):
    """Apply every rule to a :class:`~ovkit.accuracy.compare.CompareResult`; returns a dict
    (``findings`` worst first, ``summary`` one line) ready for JSON."""
    hib = higher_is_better(metric)
    setting_b = result.dump_b.meta.get('setting', {})
    rows = result.rows
    findings = []

    def bad(r):
        v = r.get(metric)
        return _finite(v) and (v < threshold if hib else v > threshold)

    # 1. overflow
    over = [r for r in rows if r.get('overflow')]
    if over:
        first = over[0]
        findings.append(dict(
            rule='fp16_overflow', severity='error', count=len(over),
            first=_ref(first, metric), tensors=[_ref(r, metric) for r in over[:20]],
            message=(f'{len(over)} tensor(s) overflow in {result.dump_b.setting}; first at op '
                     f'{first["op_index"]} {_label(first)} ({first.get("module_type") or "?"}): '
                     f'{first.get("reason")}'),
            advice=('Values beyond the fp16 range (|x| > %g) become inf and then NaN. Keep '
                    '%s and everything that produces large values (exp, sum of squares, '
                    'attention logits) in float32 (torch.autocast(enabled=False) around it), '
                    'use bf16 (fp32 range), or rescale its input.' % (fp16_max, _label(first)))))

    # 2. input inconsistency: the first tensor in execution order
    ordered = [r for r in rows if r['op_index'] is not None]
    if ordered:
        first = ordered[0]
        cos = first.get('cosine_similarity')
        mismatch = 'shape mismatch' in (first.get('reason') or '')
        if mismatch or (_finite(cos) and cos < input_threshold):
            what = 'shapes differ' if mismatch else f'cosine similarity {cos:.6f}'
            findings.append(dict(
                rule='input_inconsistency', severity='error', first=_ref(first, metric),
                message=(f'the inputs differ ({_label(first)}: {what} < {input_threshold:g}); '
                         'later differences are not meaningful until this is fixed'),
                advice=('Feed both runs the same file through the same pipeline: same config '
                        '(resize, mean/std, padding), same --input, same seed. If the input was '
                        'meant to change, compare from the first module instead (--range 1,).')))

    # 3. global consistency
    scored = [r for r in ordered if _finite(r.get(metric))]
    outputs = [r for r in ordered if r['kind'] == 'model_output']
    out_bad = [r for r in outputs if bad(r) or 'shape mismatch' in (r.get('reason') or '')]
    final_rows = outputs if outputs else scored[-1:]
    final_is_bad = bool(out_bad) if outputs else any(bad(r) for r in final_rows)
    bad_rows = [r for r in scored if bad(r)]
    crit = f'{metric} {"<" if hib else ">"} {threshold:g}'
    if final_is_bad:
        internal = [r for r in scored if r['kind'] != 'model_output']
        k = len(internal)
        while k > 0 and bad(internal[k - 1]):
            k -= 1
        node = internal[k] if k < len(internal) else (out_bad or final_rows)[0]
        earlier = [r for r in bad_rows if r['op_index'] < node['op_index']]
        before = [r for r in scored if r['op_index'] < node['op_index']]
        upstream = ''
        if before and not bad(before[-1]) and node['kind'] != 'input':
            upstream = (f' The tensor before it ({_label(before[-1])}) is still within the '
                        'threshold: the change happens in this module or in code between '
                        'modules that feeds it (e.g. NMS / top-k choosing proposals); re-run '
                        'the dump with --dump-inputs to compare its inputs too.')
        if node['kind'] == 'input':
            start = (f'The input of {node["name"]} differs while the tensors before it agree: '
                     'the cause is the code between modules that computes it (e.g. box '
                     'decoding, NMS or top-k choosing proposals): make it run in float32 '
                     '(torch.autocast(device_type, enabled=False) around it, inputs .float())')
        else:
            start = f'Start at {_label(node)}: {_low_precision_hint(setting_b)}'
        findings.append(dict(
            rule='problem_node', severity='error', node=_ref(node, metric),
            first_deviation=_ref(earlier[0], metric) if earlier else None,
            final=[_ref(r, metric) for r in final_rows],
            message=(f'the final output is off ({crit}); from op {node["op_index"]} '
                     f'{_label(node)} ({node.get("module_type") or "?"}) on, every tensor is off'
                     + (f' (earlier isolated deviations from op {earlier[0]["op_index"]})'
                        if earlier else '')),
            advice=(f'{start}; then re-run the comparison to see whether the output '
                    'recovers.' + upstream)))
    elif bad_rows:
        findings.append(dict(
            rule='single_point_deviation', severity='warning', count=len(bad_rows),
            tensors=[_ref(r, metric) for r in bad_rows[:20]],
            message=(f'{len(bad_rows)} tensor(s) have {crit} but the final output is within '
                     f'the threshold; first at op {bad_rows[0]["op_index"]} '
                     f'{_label(bad_rows[0])}'),
            advice=('The model recovers from these deviations (e.g. a ReLU, max-pool or '
                    'normalisation absorbs them); act only if the task metric drops, starting '
                    'with the worst of them.')))
    elif scored:
        findings.append(dict(
            rule='all_consistent', severity='info', count=len(scored),
            message=f'all {len(scored)} compared tensors are within {metric} threshold '
                    f'{threshold:g}',
            advice='Nothing to do at this threshold; tighten --threshold to look closer.'))
    not_compared = [r for r in rows if not _finite(r.get(metric))]
    severity_order = dict(error=0, warning=1, info=2)
    findings.sort(key=lambda f: severity_order[f['severity']])
    summary = '; '.join(f['rule'] for f in findings) or 'no tensor could be compared'
    return dict(summary=summary, metric=metric, threshold=threshold,
                input_threshold=input_threshold, fp16_max=fp16_max,
                dump_a=result.dump_a.root, dump_b=result.dump_b.root,
                setting_a=result.dump_a.setting, setting_b=result.dump_b.setting,
                compared=len(scored), not_compared=len(not_compared),
                warnings=list(result.stats.get('warnings', [])), findings=findings)


def problem_row(result, advice):
    """The row to inspect first: the problem node, else the first overflow, else the worst
    single-point deviation; None when every tensor is consistent."""
    by_rule = {f['rule']: f for f in advice['findings']}
    ref = None
    if 'problem_node' in by_rule:
        ref = by_rule['problem_node']['node']
    elif 'fp16_overflow' in by_rule:
        ref = by_rule['fp16_overflow']['first']
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
    from rich.console import Console
    from rich.panel import Panel
    console = console or Console()
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
