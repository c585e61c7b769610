"""Reports of a comparison: CSV, terminal table, scatter plot, one tensor's worst elements.

matplotlib is imported only inside the plotting functions (Agg backend), so a comparison
without plots never pays for it.
"""
import csv
import math
import os
import os.path as osp

from .common import finite as _finite
from .common import make_console
from .common import row_label as _label
from .compare import worst_rows
from .elements import tensor_detail
from .manifest import AccuracyError, safe_name
from .metrics import higher_is_better

_TABLE_METRICS = ('cosine_similarity', 'sqnr_db', 'relative_euclidean_distance',
                  'max_absolute_error', 'max_relative_error')


_SHORT = {'cosine_similarity': 'cos', 'relative_euclidean_distance': 'rel euc', 'sqnr_db': 'sqnr',
          'max_absolute_error': 'max abs', 'max_relative_error': 'max rel',
          'kl_divergence': 'kl', 'mean_absolute_error': 'mean abs',
          'root_mean_square_error': 'rmse', 'mean_relative_error': 'mean rel',
          'accumulated_relative_error': 'acc rel'}


def _short_value(metric, v):
    if metric == 'cosine_similarity' and _finite(v):
        return f'{v:.6f}'
    return f'{v:.3g}'


def _fmt_shape(shape):
    if shape is None:
        return ''
    return 'x'.join(str(s) for s in shape) if len(shape) else 'scalar'


def _fmt(v):
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f'{v:.9g}' if math.isfinite(v) else str(v)
    if v is None:
        return ''
    return str(v)


def write_csv(result, path):
    """One row per tensor, columns in ``result.columns`` (shapes as ``2x3x4``)."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(result.columns)
        for row in result.rows:
            w.writerow([_fmt_shape(row.get(c)) if c.startswith('shape_') else _fmt(row.get(c))
                        for c in result.columns])
    return path


def is_bad(value, metric, threshold):
    """True when ``value`` is on the wrong side of ``threshold`` for ``metric``'s direction."""
    if not _finite(value):
        return False
    return value < threshold if higher_is_better(metric) else value > threshold


def print_table(result, metric='cosine_similarity', top=20, threshold=None, console=None):
    """The ``top`` worst tensors by ``metric`` as a rich table, then rows not compared."""
    from rich.table import Table
    console = console or make_console()
    rows = worst_rows(result, metric, top)
    title = (f'{len(rows)} worst of {len(result.rows)} tensors by {metric}: '
             f'{result.dump_a.setting} (A) vs {result.dump_b.setting} (B)')
    table = Table(title=title, show_lines=False)
    table.add_column('op', justify='right', min_width=3)
    table.add_column('tensor', no_wrap=True, min_width=12)
    table.add_column('shape', no_wrap=True)
    # as many metric columns as the terminal fits without truncating numbers
    n_extra = 4 if console.width >= 140 else 2 if console.width >= 110 else 1
    cols = [metric] + [m for m in _TABLE_METRICS if m != metric][:n_extra]
    for c in cols:
        table.add_column(_SHORT.get(c, c), justify='right', no_wrap=True)
    table.add_column('grade', no_wrap=True)
    own = result.isolated
    if own:
        table.add_column(f'own {_SHORT.get(metric, metric)}', justify='right', no_wrap=True)
    table.add_column('reason', overflow='fold')
    for r in rows:
        bad = threshold is not None and is_bad(r[metric], metric, threshold)
        style = 'red' if bad or r.get('overflow') else None
        reason = ('OVERFLOW ' if r.get('overflow') else '') + (r.get('reason') or '')
        extra = [_short_value(metric, r.get('isolated_' + metric, math.nan))] if own else []
        table.add_row(str(r['op_index'] if r['op_index'] is not None else '-'), _label(r),
                      _fmt_shape(r.get('shape_a')),
                      *[_short_value(c, r.get(c, math.nan)) for c in cols], r.get('grade', ''),
                      *extra, reason, style=style)
    console.print(table)
    skipped = [r for r in result.rows if not _finite(r.get(metric))]
    if skipped:
        console.print(f'[yellow]{len(skipped)} tensor(s) not compared[/yellow], e.g.:')
        for r in skipped[:5]:
            console.print(f'  op {r["op_index"] if r["op_index"] is not None else "-"} '
                          f'{_label(r)}: {r.get("reason")}')
    return rows


def _pyplot():
    import matplotlib
    matplotlib.use('Agg', force=False)
    import matplotlib.pyplot as plt
    return plt


def plot_scatter(result, path, metric='cosine_similarity', threshold=0.99, problem=None):
    """``metric`` over execution order; points beyond ``threshold`` in red, the line drawn.

    Tensors without a value (shape mismatch, one side only...) are ticks at the bottom.
    """
    plt = _pyplot()
    pts = [(r['op_index'], r[metric], r) for r in result.rows
           if r['op_index'] is not None and _finite(r.get(metric))]
    missing = [r['op_index'] for r in result.rows
               if r['op_index'] is not None and not _finite(r.get(metric))]
    good = [(x, y) for x, y, _ in pts if not is_bad(y, metric, threshold)]
    bad = [(x, y) for x, y, _ in pts if is_bad(y, metric, threshold)]
    fig, ax = plt.subplots(figsize=(11, 4.5), dpi=110)
    if good:
        ax.scatter(*zip(*good), s=12, c='tab:green', label=f'within threshold ({len(good)})')
    if bad:
        ax.scatter(*zip(*bad), s=16, c='tab:red', label=f'beyond threshold ({len(bad)})')
    ax.axhline(threshold, color='tab:orange', ls='--', lw=1, label=f'threshold {threshold:g}')
    ys = [y for _, y, _ in pts]
    if not higher_is_better(metric) and ys and min(ys) >= 0:
        positive = [y for y in ys if y > 0]
        if positive and max(positive) / min(positive) > 1e3:
            ax.set_yscale('symlog', linthresh=min(positive))
    if missing:
        ax.plot(missing, [0] * len(missing), '|', color='grey', ms=10,
                transform=ax.get_xaxis_transform(), label=f'not compared ({len(missing)})')
    if problem is not None and problem.get('op_index') is not None and _finite(
            problem.get(metric)):
        xs = [x for x, _, _ in pts] or [0]
        right = problem['op_index'] > (min(xs) + max(xs)) / 2  # keep the label inside
        ax.annotate(f'problem node: {_label(problem)}', (problem['op_index'], problem[metric]),
                    xytext=(-12 if right else 12, 20), textcoords='offset points',
                    ha='right' if right else 'left', fontsize=8,
                    arrowprops=dict(arrowstyle='->', color='black'))
    if ax.get_yscale() == 'linear':
        ax.ticklabel_format(axis='y', useOffset=False)
    ax.set_xlabel('op index (execution order of A)')
    ax.set_ylabel(metric.replace('_', ' '))
    ax.set_title(f'{metric}: {result.dump_a.setting} (A) vs {result.dump_b.setting} (B)')
    ax.grid(alpha=0.3)
    ax.legend(loc='best', fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def find_row(result, tensor):
    """A row by op index (int or digits) or by name / label (``backbone.conv1``,
    ``backbone.conv1#1[0]``); AccuracyError lists close names when nothing matches."""
    if isinstance(tensor, dict):
        return tensor
    text = str(tensor)
    if text.isdigit():
        for r in result.rows:
            if r['op_index'] == int(text):
                return r
        raise AccuracyError(f'--tensor {text}: no op index {text} in the comparison')
    for r in result.rows:
        if _label(r) == text:
            return r
    for r in result.rows:
        if r['name'] == text:
            return r
    close = [_label(r) for r in result.rows if text.split('.')[-1] in r['name']][:5]
    raise AccuracyError(f'--tensor {text!r} matches no tensor' +
                        (f'; similar: {", ".join(close)}' if close else
                         '; use an op index or a name from the CSV'))


def write_tensor_detail(detail, out_dir, setting_a='A', setting_b='B', plot=True):
    """``tensor_{label}.top{N}_{by}.csv`` and (``plot``) ``tensor_{label}.cdf_{by}.png`` in
    ``out_dir``; returns both paths (None for a skipped plot)."""
    row, by = detail['row'], detail['by']
    stem = safe_name(_label(row))
    top_path = osp.join(out_dir, f'tensor_{stem}.top{len(detail["top"])}_{by}.csv')
    with open(top_path, 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(['rank', 'index', 'flat_index', 'a', 'b', 'abs_error', 'rel_error'])
        for t in detail['top']:
            w.writerow([t['rank'], 'x'.join(map(str, t['index'])) or 'scalar', t['flat_index'],
                        _fmt(t['a']), _fmt(t['b']), _fmt(t['abs_error']), _fmt(t['rel_error'])])
    if not plot or detail['hist'] is None:
        return top_path, None
    plt = _pyplot()
    import numpy as np
    h = detail['hist']
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    total = max(h['total'], 1)
    if len(h['edges']):
        cdf = (h['zeros'] + np.cumsum(h['counts'])) / total
        ax.step(h['edges'][1:], cdf, where='post', color='tab:blue')
        ax.set_xscale('log')
        for i, q in enumerate((0.5, 0.9, 0.99, 0.999)):
            k = int(np.searchsorted(cdf, q))
            if k < len(cdf):
                ax.axvline(h['edges'][k + 1], color='grey', ls=':', lw=0.8)
                ax.text(h['edges'][k + 1], 0.08 + 0.1 * i,
                        f' p{q * 100:g} = {h["edges"][k + 1]:.3g}', fontsize=7)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f'{"absolute" if by == "abs" else "relative"} error |a-b|'
                  + ('' if by == 'abs' else ' / |a|'))
    ax.set_ylabel('fraction of elements <= error')
    note = f'exact: {h["zeros"] / total:.1%}'
    if h['nonfinite']:
        note += f', NaN/inf on one side: {h["nonfinite"]}'
    ax.set_title(f'{_label(row)} ({setting_a} vs {setting_b}): cumulative error\n{note}',
                 fontsize=9)
    ax.grid(alpha=0.3, which='both')
    fig.tight_layout()
    cdf_path = osp.join(out_dir, f'tensor_{stem}.cdf_{by}.png')
    fig.savefig(cdf_path)
    plt.close(fig)
    return top_path, cdf_path


def print_tensor_detail(detail, console=None):
    from rich.table import Table
    console = console or make_console()
    table = Table(title=f'top {len(detail["top"])} elements of {_label(detail["row"])} by '
                        f'{detail["by"]} error')
    for c in ('rank', 'index', 'a', 'b', 'abs error', 'rel error'):
        table.add_column(c, justify='right')
    for t in detail['top']:
        table.add_row(str(t['rank']), str(t['index']), f'{t["a"]:.7g}', f'{t["b"]:.7g}',
                      f'{t["abs_error"]:.4g}', f'{t["rel_error"]:.4g}')
    console.print(table)


def write_report(result, out_dir, metric='cosine_similarity', threshold=None,
                 input_threshold=None, fp16_max=None, tensor=None, top_n=20, by='abs',
                 table_top=20, plots=True, console=None, quiet=False, html=True, html_cdfs=10,
                 extra_findings=()):
    """Everything a user acts on, in ``out_dir``: ``compare.csv``, ``report.html``,
    ``scatter_{metric}.png``, ``advice.json``, and for one tensor its top-N elements CSV and
    cumulative error plot.

    Args:
        result: the :class:`~ovkit.accuracy.compare.CompareResult`.
        out_dir: report directory.
        metric: metric of the table, the plots and the advisor.
        threshold: good/bad split on ``metric`` (default: the advisor's).
        input_threshold: cosine below which the model inputs are inconsistent.
        fp16_max: magnitude treated as fp16 overflow.
        tensor: op index or name of the tensor to detail (default: the problem node the
            advisor found, else the worst tensor).
        top_n: elements listed for that tensor.
        by: ``abs`` or ``rel`` error for the element ranking and the CDFs.
        table_top: rows of the terminal table.
        plots: write the PNG plots.
        console: a rich console (default: a new one).
        quiet: print nothing.
        html: write ``report.html`` (:mod:`.html`).
        html_cdfs: worst tensors whose error CDF the HTML page embeds.
        extra_findings: findings appended to the advice (e.g. the fp32 fix).

    Returns:
        dict(csv, html, scatter, advice_json, tensor_csv, tensor_cdf, advice).
    """
    from .advisor import (
        DEFAULT_INPUT_THRESHOLD,
        DEFAULT_THRESHOLD,
        advise,
        print_advice,
        problem_row,
        save_advice,
    )
    from .metrics import FP16_MAX
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    input_threshold = DEFAULT_INPUT_THRESHOLD if input_threshold is None else input_threshold
    fp16_max = FP16_MAX if fp16_max is None else fp16_max
    higher_is_better(metric)  # unknown metric: fail before writing anything
    os.makedirs(out_dir, exist_ok=True)
    if console is None:
        console = make_console(quiet)
    paths = dict(csv=write_csv(result, osp.join(out_dir, 'compare.csv')))
    advice = advise(result, metric, threshold, input_threshold, fp16_max)
    advice['findings'].extend(extra_findings)
    paths['advice_json'] = save_advice(advice, osp.join(out_dir, 'advice.json'))
    print_table(result, metric, table_top, threshold, console)
    print_advice(advice, console)
    row = find_row(result, tensor) if tensor is not None else problem_row(result, advice)
    if row is None:
        worst = worst_rows(result, metric, 1)
        row = worst[0] if worst else None
    paths['html'] = paths['scatter'] = paths['tensor_csv'] = paths['tensor_cdf'] = None
    if html:
        from .html import write_html
        paths['html'] = write_html(result, osp.join(out_dir, 'report.html'), advice, metric,
                                   threshold, html_cdfs, by)
    if plots:
        paths['scatter'] = plot_scatter(result, osp.join(out_dir, f'scatter_{metric}.png'),
                                        metric, threshold, problem_row(result, advice))
    if row is not None and row.get('file_a') and row.get('file_b') and _finite(row.get(metric)):
        detail = tensor_detail(row, top_n, by, bins=200 if plots else 0)
        print_tensor_detail(detail, console)
        paths['tensor_csv'], paths['tensor_cdf'] = write_tensor_detail(
            detail, out_dir, result.dump_a.setting, result.dump_b.setting, plots)
    elif tensor is not None:
        raise AccuracyError(f'--tensor {tensor}: {_label(row)} was not compared '
                            f'({row.get("reason")}); pick a compared tensor')
    paths['advice'] = advice
    console.print(f'report written to {out_dir}: ' + ', '.join(
        osp.basename(p) for k, p in paths.items() if k != 'advice' and p), markup=False)
    return paths
