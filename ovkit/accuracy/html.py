"""The comparison as one self-contained HTML page: no network at view time.

Everything is inline (CSS, the script, the data as JSON): the page opens from a file, offline,
in any current browser. Written by hand (no plotting library) so that nothing has to be fetched
or vendored:

* the advice (every finding, the fp32 snippet when ``suggest-fp32`` ran);
* a scatter plot of a metric over execution order (hover: the tensor, its value and grade;
  click: its error CDF), the threshold drawn;
* the error attribution (with isolated outputs): own vs propagated relative error of the
  modules with the largest own error, as bars on a log scale;
* the cumulative error distribution of a chosen tensor (the ``cdfs`` worst tensors and the
  problem node are embedded; pick one in the list or click a row / point);
* the table: one row per tensor, sortable by any column, filterable by name.

``document.documentElement`` gets ``data-ready="1"`` once the page is built and
``data-errors`` with any script error, which the headless-browser test reads.
"""
import json
import math
import os
import os.path as osp
import time

from .common import finite, row_label
from .metrics import higher_is_better

# (row key, header, kind): kind 'num' sorts numerically, 'txt' as text
TABLE_COLUMNS = (
    ('op_index', 'op', 'num'), ('label', 'tensor', 'txt'), ('module_type', 'module', 'txt'),
    ('shape', 'shape', 'txt'), ('grade', 'grade', 'txt'),
    ('cosine_similarity', 'cosine', 'num'), ('sqnr_db', 'SQNR dB', 'num'),
    ('relative_euclidean_distance', 'rel. eucl.', 'num'),
    ('max_absolute_error', 'max abs', 'num'), ('max_relative_error', 'max rel', 'num'),
    ('error_ratio_1e-3', '>1‰', 'num'), ('error_ratio_5e-3', '>5‰', 'num'),
    ('isolated_cosine_similarity', 'own cosine', 'num'), ('isolated_sqnr_db', 'own SQNR', 'num'),
    ('isolated_grade', 'own grade', 'txt'), ('reason', 'reason', 'txt'))
SCATTER_METRICS = ('cosine_similarity', 'sqnr_db', 'relative_euclidean_distance',
                   'max_relative_error', 'error_ratio_1e-3', 'error_ratio_5e-3',
                   'isolated_relative_euclidean_distance', 'isolated_sqnr_db')


def _num(v):
    """JSON-safe number: NaN / inf become strings the page turns back into numbers."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        if math.isnan(v):
            return 'NaN'
        if math.isinf(v):
            return 'Infinity' if v > 0 else '-Infinity'
        return v
    return v


def _shape(s):
    return 'x'.join(map(str, s)) if s else ('scalar' if s == [] else '')


def _cdf(detail, points=120):
    h = detail['hist']
    total = max(h['total'], 1)
    if not len(h['edges']):
        return dict(x=[], y=[], zeros=h['zeros'] / total, nonfinite=h['nonfinite'],
                    total=h['total'], by=detail['by'])
    import numpy as np
    cdf = (h['zeros'] + np.cumsum(h['counts'])) / total
    step = max(1, len(cdf) // points)
    idx = list(range(0, len(cdf), step))
    if idx[-1] != len(cdf) - 1:
        idx.append(len(cdf) - 1)
    return dict(x=[float(h['edges'][i + 1]) for i in idx], y=[float(cdf[i]) for i in idx],
                zeros=h['zeros'] / total, nonfinite=h['nonfinite'], total=h['total'],
                by=detail['by'])


def collect(result, advice, metric='cosine_similarity', threshold=0.99, cdfs=10, by='abs',
            extra_findings=()):
    """The page's data (a JSON-ready dict); computes the embedded error CDFs.

    Args:
        result: the :class:`~ovkit.accuracy.compare.CompareResult`.
        advice: the advisor's dict.
        metric: metric of the scatter plot and the CDF choice.
        threshold: threshold line of the scatter plot.
        cdfs: how many of the worst tensors get an embedded error CDF (plus the problem node).
        by: ``abs`` or ``rel`` error for the CDFs.
        extra_findings: findings to show after the advisor's (e.g. the fp32 fix).
    """
    from .advisor import own_error_ranking, problem_row
    from .compare import worst_rows
    from .elements import tensor_detail
    rows = []
    for r in result.rows:
        d = {k: _num(r.get(k)) for k, _, kind in TABLE_COLUMNS if kind == 'num'}
        d.update(label=row_label(r), module_type=r.get('module_type') or '',
                 shape=_shape(r.get('shape_a') or r.get('shape_b')), grade=r.get('grade', ''),
                 isolated_grade=r.get('isolated_grade', ''), reason=r.get('reason') or '',
                 kind=r.get('kind'))
        for m in SCATTER_METRICS + (metric,):
            d[m] = _num(r.get(m))
        rows.append(d)
    chosen = worst_rows(result, metric, cdfs) if cdfs else []
    problem = problem_row(result, advice)
    if problem is not None and problem not in chosen and finite(problem.get(metric)):
        chosen = [problem] + chosen
    curves = {}
    for r in chosen:
        if r.get('file_a') and r.get('file_b') and not r.get('reason', '').startswith('shape'):
            try:
                curves[row_label(r)] = _cdf(tensor_detail(r, top_n=0, by=by, bins=200))
            except Exception as e:  # one unreadable tensor must not lose the page
                curves[row_label(r)] = dict(error=str(e))
    attribution = [dict(label=row_label(r), module_type=r.get('module_type') or '',
                        own=_num(r.get('isolated_relative_euclidean_distance')),
                        propagated=_num(r.get('relative_euclidean_distance')),
                        own_nonfinite=r.get('isolated_nonfinite_new_b') or 0,
                        nonfinite=r.get('nonfinite_new_b') or 0)
                   for r in own_error_ranking(result.rows, metric)[:25]]
    findings = list(advice['findings']) + list(extra_findings)
    return dict(
        title=f'{result.dump_a.setting} (A) vs {result.dump_b.setting} (B)',
        created=time.strftime('%Y-%m-%d %H:%M:%S'), metric=metric,
        higher_is_better=higher_is_better(metric), threshold=threshold,
        dump_a=str(result.dump_a.root), dump_b=str(result.dump_b.root),
        warnings=advice.get('warnings', []), findings=findings,
        columns=[dict(key=k, title=t, kind=kind) for k, t, kind in TABLE_COLUMNS
                 if kind == 'txt' or k in ('op_index',) or any(
                     isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                     for r in result.rows)],
        scatter_metrics=[m for m in dict.fromkeys((metric,) + SCATTER_METRICS)
                         if any(finite(r.get(m)) for r in result.rows)],
        rows=rows, cdfs=curves, cdf_by=by,
        problem=row_label(problem) if problem is not None else None,
        attribution=attribution, isolated=bool(attribution) or result.isolated)


def write_html(result, path, advice, metric='cosine_similarity', threshold=0.99, cdfs=10,
               by='abs', extra_findings=()):
    """Write the page to ``path`` (see module docstring); returns ``path``.

    Args:
        result: the :class:`~ovkit.accuracy.compare.CompareResult`.
        path: the ``.html`` file to write.
        advice: the advisor's dict.
        metric: metric of the scatter plot and the CDF choice.
        threshold: threshold line of the scatter plot.
        cdfs: how many of the worst tensors get an embedded error CDF.
        by: ``abs`` or ``rel`` error for the CDFs.
        extra_findings: findings to show after the advisor's.
    """
    data = collect(result, advice, metric, threshold, cdfs, by, extra_findings)
    payload = json.dumps(data, default=str, allow_nan=False).replace('</', '<\\/')
    html = (_PAGE.replace('__TITLE__', _escape(data['title']))
            .replace('__DATA__', payload).replace('__STYLE__', _STYLE)
            .replace('__SCRIPT__', _SCRIPT))
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        f.write(html)
    return path


def _escape(text):
    return (str(text).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')
            .replace('"', '&quot;'))


_PAGE = '''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ovkit accuracy: __TITLE__</title>
<script>
window.__ovkitErrors = [];
window.addEventListener('error', function (e) {
  window.__ovkitErrors.push(String(e.message || e));
  document.documentElement.setAttribute('data-errors', window.__ovkitErrors.join(' | '));
});
</script>
<style>__STYLE__</style></head>
<body>
<header><h1>ovkit accuracy: <span id="title"></span></h1><div id="meta"></div></header>
<section><h2>Advice</h2><div id="advice"></div></section>
<section><h2>Over execution order</h2>
<label>metric <select id="scatter-metric"></select></label>
<div id="scatter" class="plot"></div></section>
<section id="attribution-section"><h2>Error attribution: own vs propagated</h2>
<p class="note">Own: the module run alone, in setting B, on A's inputs. Propagated: what
reaches its output through the model. Relative Euclidean distance |a-b|/|a|, log scale.</p>
<div id="attribution" class="plot"></div></section>
<section><h2>Error distribution of one tensor</h2>
<label>tensor <select id="cdf-tensor"></select></label>
<div id="cdf" class="plot"></div></section>
<section><h2>All tensors</h2>
<label>filter <input id="filter" placeholder="name contains..."></label>
<span id="count"></span>
<div class="table-wrap"><table id="table"><thead></thead><tbody></tbody></table></div>
</section>
<div id="tip" class="tip"></div>
<script type="application/json" id="ovkit-data">__DATA__</script>
<script>__SCRIPT__</script>
</body></html>
'''

_STYLE = '''
body{font:13px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 1.5em 2em;color:#222}
h1{font-size:1.35em;margin:.8em 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .4em}
#meta,.note{color:#666;font-size:.92em}
.finding{border-left:4px solid #999;padding:.3em .7em;margin:.4em 0;background:#fafafa}
.finding.error{border-color:#c62828}.finding.warning{border-color:#ef8f00}
.finding.info{border-color:#2e7d32}.finding b{text-transform:uppercase;font-size:.85em}
.finding pre{background:#f0f0f0;padding:.5em;overflow:auto;font-size:.9em}
.warn-note{color:#8a5a00}
.plot svg{background:#fff;border:1px solid #ddd}
.table-wrap{max-height:70vh;overflow:auto;border:1px solid #ddd}
table{border-collapse:collapse;font-size:.9em;width:100%}
th{position:sticky;top:0;background:#eee;cursor:pointer;user-select:none;white-space:nowrap}
th,td{padding:2px 6px;border-bottom:1px solid #eee;text-align:right}
td.txt,th.txt{text-align:left}td.reason{max-width:30em;white-space:normal;color:#8a5a00}
tr:hover td{background:#f5f9ff}tr.sel td{background:#e3efff}
.g-pass{color:#2e7d32}.g-warn{color:#ef8f00;font-weight:600}.g-error{color:#c62828;font-weight:700}
.tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:4px 7px;
border-radius:3px;font-size:12px;display:none;z-index:9;max-width:40em;white-space:pre}
'''

_SCRIPT = r'''
(function () {
'use strict';
var D = JSON.parse(document.getElementById('ovkit-data').textContent);
var NS = 'http://www.w3.org/2000/svg';
function num(v) { return (typeof v === 'string') ? Number(v) : v; }
function fin(v) { v = num(v); return typeof v === 'number' && isFinite(v); }
function fmt(v) {
  v = num(v);
  if (v === null || v === undefined || v === '') return '';
  if (typeof v !== 'number') return String(v);
  if (!isFinite(v)) return String(v);
  if (v === 0) return '0';
  if (Number.isInteger(v) && Math.abs(v) < 1e7) return String(v);
  var a = Math.abs(v);
  return (a >= 1e-3 && a < 1e5) ? v.toPrecision(6).replace(/\.?0+$/, '') : v.toExponential(3);
}
function tick(v, step) {  // enough decimals that neighbouring ticks differ
  var d = Math.max(0, Math.min(12, Math.ceil(-Math.log10(Math.abs(step))) + 1));
  return Math.abs(v) < 1e5 && step > 0 ? v.toFixed(d) : fmt(v);
}
function el(tag, attrs, text) {
  var e = document.createElement(tag);
  for (var k in (attrs || {})) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function sv(tag, attrs, text) {
  var e = document.createElementNS(NS, tag);
  for (var k in (attrs || {})) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
var tip = document.getElementById('tip');
function showTip(ev, text) {
  tip.textContent = text; tip.style.display = 'block';
  tip.style.left = (ev.clientX + 12) + 'px'; tip.style.top = (ev.clientY + 12) + 'px';
}
function hideTip() { tip.style.display = 'none'; }

// ---------------------------------------------------------------- header and advice
document.getElementById('title').textContent = D.title;
document.getElementById('meta').textContent = 'A: ' + D.dump_a + '  B: ' + D.dump_b +
  '  metric: ' + D.metric + ' (threshold ' + D.threshold + ')  written ' + D.created;
var adv = document.getElementById('advice');
D.findings.forEach(function (f) {
  var box = el('div', {'class': 'finding ' + f.severity});
  box.appendChild(el('b', {}, f.severity + ' ' + f.rule));
  box.appendChild(document.createTextNode(': ' + f.message));
  var lines = String(f.advice || '').split('\n');
  box.appendChild(el('div', {}, '→ ' + lines[0]));
  if (lines.length > 1) box.appendChild(el('pre', {}, lines.slice(1).join('\n')));
  adv.appendChild(box);
});
if (!D.findings.length) adv.appendChild(el('div', {}, 'no tensor could be compared'));
D.warnings.forEach(function (w) {
  adv.appendChild(el('div', {'class': 'warn-note'}, 'note: ' + w));
});

// ---------------------------------------------------------------- generic axes
function axes(svg, x0, x1, y0, y1, W, H, M, logx, logy, xlabel, ylabel) {
  function frac(v, log, lo, hi) { return ((log ? Math.log10(v) : v) - lo) / (hi - lo); }
  function sx(v) { return M.l + frac(v, logx, x0, x1) * (W - M.l - M.r); }
  function sy(v) { return H - M.b - frac(v, logy, y0, y1) * (H - M.t - M.b); }
  function label(x, y, anchor, size, text, extra) {
    var a = {x: x, y: y, 'text-anchor': anchor, 'font-size': size};
    for (var k in (extra || {})) a[k] = extra[k];
    svg.appendChild(sv('text', a, text));
  }
  svg.appendChild(sv('line', {x1: M.l, y1: H - M.b, x2: W - M.r, y2: H - M.b, stroke: '#888'}));
  svg.appendChild(sv('line', {x1: M.l, y1: M.t, x2: M.l, y2: H - M.b, stroke: '#888'}));
  for (var i = 0; i <= 4; i++) {
    var xv = x0 + (x1 - x0) * i / 4, yv = y0 + (y1 - y0) * i / 4;
    var xt = logx ? Math.pow(10, xv) : xv, yt = logy ? Math.pow(10, yv) : yv;
    var px = sx(xt), py = sy(yt);
    var xs = logx ? fmt(xt) : tick(xt, (x1 - x0) / 4);
    var ys = logy ? fmt(yt) : tick(yt, (y1 - y0) / 4);
    svg.appendChild(sv('line', {x1: px, y1: H - M.b, x2: px, y2: H - M.b + 4, stroke: '#888'}));
    label(px, H - M.b + 16, 'middle', 10, xs);
    svg.appendChild(sv('line', {x1: M.l - 4, y1: py, x2: W - M.r, y2: py, stroke: '#eee'}));
    label(M.l - 6, py + 3, 'end', 10, ys);
  }
  var mid = (M.t + H - M.b) / 2;
  label((M.l + W - M.r) / 2, H - 4, 'middle', 11, xlabel);
  label(12, mid, 'middle', 11, ylabel, {transform: 'rotate(-90 12 ' + mid + ')'});
  return {sx: sx, sy: sy};
}
function range(vals, log) {
  var v = vals.filter(function (x) { return fin(x) && (!log || x > 0); }).map(num);
  if (!v.length) return null;
  var lo = Math.min.apply(null, v), hi = Math.max.apply(null, v);
  if (log) { lo = Math.log10(lo); hi = Math.log10(hi); }
  if (hi - lo < 1e-12) { lo -= 0.5; hi += 0.5; }
  var pad = (hi - lo) * 0.05;
  return [lo - pad, hi + pad];
}
var HIB = {cosine_similarity: 1, sqnr_db: 1, isolated_sqnr_db: 1, isolated_cosine_similarity: 1};

// ---------------------------------------------------------------- scatter
var selMetric = document.getElementById('scatter-metric');
D.scatter_metrics.forEach(function (m) { selMetric.appendChild(el('option', {value: m}, m)); });
function drawScatter() {
  var m = selMetric.value, box = document.getElementById('scatter');
  box.innerHTML = '';
  var pts = D.rows.filter(function (r) { return r.op_index !== null && fin(r[m]); });
  var W = Math.max(600, Math.min(1400, box.clientWidth || 1000)), H = 320;
  var M = {l: 80, r: 30, t: 12, b: 36};
  var svg = sv('svg', {width: W, height: H, id: 'scatter-svg'});
  box.appendChild(svg);
  if (!pts.length) {
    svg.appendChild(sv('text', {x: 20, y: 40}, 'no compared tensor has ' + m));
    return;
  }
  var ys = pts.map(function (r) { return num(r[m]); });
  var pos = ys.filter(function (v) { return v > 0; });
  var logy = !HIB[m] && pos.length === ys.length &&
    Math.max.apply(null, ys) / Math.min.apply(null, pos) > 1e3;
  var xr = range(pts.map(function (r) { return r.op_index; }), false), yr = range(ys, logy);
  var withThr = m === D.metric;
  if (withThr && !logy) { yr = range(ys.concat([D.threshold]), false); }
  var ax = axes(svg, xr[0], xr[1], yr[0], yr[1], W, H, M, false, logy,
                'op index (execution order of A)', m);
  if (withThr && (!logy || D.threshold > 0)) {
    var ty = ax.sy(D.threshold);
    svg.appendChild(sv('line', {x1: M.l, x2: W - M.r, y1: ty, y2: ty, stroke: '#ef8f00',
                                'stroke-dasharray': '5,4'}));
  }
  pts.forEach(function (r) {
    var bad = withThr && (D.higher_is_better ? num(r[m]) < D.threshold : num(r[m]) > D.threshold);
    var c = sv('circle', {cx: ax.sx(r.op_index), cy: ax.sy(num(r[m])),
      r: r.label === D.problem ? 5 : 3,
      fill: (r.grade === 'error' || bad) ? '#c62828' : (r.grade === 'warn' ? '#ef8f00' : '#2e7d32'),
      'class': 'pt'});
    c.addEventListener('mousemove', function (ev) {
      showTip(ev, 'op ' + r.op_index + '  ' + r.label + ' (' + r.module_type + ')\n' + m +
        ' = ' + fmt(r[m]) + '  grade ' + r.grade);
    });
    c.addEventListener('mouseleave', hideTip);
    c.addEventListener('click', function () { pick(r.label); });
    svg.appendChild(c);
  });
}
selMetric.addEventListener('change', drawScatter);

// ---------------------------------------------------------------- attribution bars
function drawAttribution() {
  var box = document.getElementById('attribution');
  if (!D.attribution.length) {
    box.appendChild(el('p', {'class': 'note'}, D.isolated ? 'no module has an own error.' :
      'not measured: run with --isolate (or suggest-fp32) to see which modules cause the error.'));
    return;
  }
  var rowH = 22, W = 900, M = {l: 330, r: 60, t: 24, b: 10};
  var H = M.t + M.b + rowH * D.attribution.length;
  var svg = sv('svg', {width: W, height: H, id: 'attribution-svg'});
  box.appendChild(svg);
  var vals = [];
  D.attribution.forEach(function (a) {
    [a.own, a.propagated].forEach(function (v) { if (fin(v) && num(v) > 0) vals.push(num(v)); });
  });
  var lo = vals.length ? Math.floor(Math.log10(Math.min.apply(null, vals))) : -8;
  var hi = vals.length ? Math.ceil(Math.log10(Math.max.apply(null, vals))) : 0;
  if (hi <= lo) hi = lo + 1;
  function bx(v) { return M.l + (Math.log10(v) - lo) / (hi - lo) * (W - M.l - M.r); }
  svg.appendChild(sv('text', {x: M.l, y: 14, 'font-size': 11}, '1e' + lo));
  svg.appendChild(sv('text', {x: W - M.r, y: 14, 'font-size': 11, 'text-anchor': 'end'},
                     '1e' + hi));
  svg.appendChild(sv('rect', {x: 10, y: 4, width: 10, height: 10, fill: '#c62828'}));
  svg.appendChild(sv('text', {x: 24, y: 13, 'font-size': 11}, 'own'));
  svg.appendChild(sv('rect', {x: 60, y: 4, width: 10, height: 10, fill: '#90a4ae'}));
  svg.appendChild(sv('text', {x: 74, y: 13, 'font-size': 11}, 'propagated'));
  D.attribution.forEach(function (a, i) {
    var y = M.t + i * rowH;
    var g = sv('g', {'class': 'bar'});
    g.appendChild(sv('text', {x: M.l - 6, y: y + 14, 'text-anchor': 'end', 'font-size': 11},
                     a.label));
    var bars = [[a.own, a.own_nonfinite, '#c62828', 2], [a.propagated, a.nonfinite, '#90a4ae', 11]];
    bars.forEach(function (b) {
      var v = num(b[0]), w = 0;
      if (b[1] > 0) w = W - M.l - M.r;
      else if (fin(v) && v > 0) w = Math.max(1, bx(v) - M.l);
      g.appendChild(sv('rect', {x: M.l, y: y + b[3], width: w, height: 8, fill: b[2]}));
      if (b[1] > 0) {
        g.appendChild(sv('text', {x: M.l + w + 3, y: y + b[3] + 8, 'font-size': 10}, 'NaN/inf'));
      }
    });
    g.addEventListener('mousemove', function (ev) {
      function val(n, v) { return n ? n + ' new NaN/inf' : fmt(v); }
      showTip(ev, a.label + ' (' + a.module_type + '): own ' + val(a.own_nonfinite, a.own) +
        ', propagated ' + val(a.nonfinite, a.propagated));
    });
    g.addEventListener('mouseleave', hideTip);
    g.addEventListener('click', function () { pick(a.label); });
    svg.appendChild(g);
  });
}

// ---------------------------------------------------------------- CDF
var selCdf = document.getElementById('cdf-tensor');
Object.keys(D.cdfs).forEach(function (k) { selCdf.appendChild(el('option', {value: k}, k)); });
function drawCdf() {
  var box = document.getElementById('cdf'), key = selCdf.value, c = D.cdfs[key];
  box.innerHTML = '';
  if (!c) { box.appendChild(el('p', {'class': 'note'}, key ? 'no distribution embedded for ' + key +
    ' (compare with --tensor ' + key + ' for its PNG)' : 'no tensor compared')); return; }
  if (c.error) { box.appendChild(el('p', {'class': 'note'}, c.error)); return; }
  var W = 720, H = 300, M = {l: 60, r: 40, t: 12, b: 36};
  var svg = sv('svg', {width: W, height: H, id: 'cdf-svg'});
  box.appendChild(svg);
  if (!c.x.length) {
    svg.appendChild(sv('text', {x: 20, y: 40}, 'every element is exact (' +
                       fmt(c.zeros * 100) + '% equal)'));
    return;
  }
  var xr = range(c.x, true);
  var xlabel = (c.by === 'abs' ? 'absolute' : 'relative') + ' error';
  var ax = axes(svg, xr[0], xr[1], 0, 1.02, W, H, M, true, false, xlabel,
                'fraction of elements <= error');
  var d = '', prev = null;
  c.x.forEach(function (x, i) {
    var px = ax.sx(x), py = ax.sy(c.y[i]);
    d += (i === 0 ? 'M' + px + ',' + ax.sy(c.zeros) + ' L' + px + ',' + py : ' H' + px + ' V' + py);
  });
  svg.appendChild(sv('path', {d: d, fill: 'none', stroke: '#1565c0', 'stroke-width': 1.6}));
  svg.appendChild(sv('text', {x: M.l + 8, y: M.t + 14, 'font-size': 11}, key + ': exact ' +
    fmt(c.zeros * 100) + '%, NaN/inf on one side ' + c.nonfinite + ', ' + c.total +
    ' elements'));
}
selCdf.addEventListener('change', drawCdf);

// ---------------------------------------------------------------- table
var table = document.getElementById('table'), thead = table.tHead, tbody = table.tBodies[0];
var sortKey = 'op_index', sortDir = 1, trs = {};
var hr = el('tr');
D.columns.forEach(function (c) {
  var th = el('th', {'class': c.kind, 'data-key': c.key, title: 'sort by ' + c.key}, c.title);
  th.addEventListener('click', function () {
    if (sortKey === c.key) sortDir = -sortDir; else { sortKey = c.key; sortDir = 1; }
    sortRows();
  });
  hr.appendChild(th);
});
thead.appendChild(hr);
D.rows.forEach(function (r) {
  var tr = el('tr', {'data-label': r.label});
  D.columns.forEach(function (c) {
    var v = r[c.key];
    var text = c.kind === 'num' ? fmt(v) : (v === null ? '' : String(v));
    var td = el('td', {'class': c.kind + (c.key === 'reason' ? ' reason' : '')}, text);
    if (c.key === 'grade' || c.key === 'isolated_grade') {
      td.className += ' g-' + (v || '').replace('/', '');
    }
    tr.appendChild(td);
  });
  tr.addEventListener('click', function () { pick(r.label); });
  r._tr = tr; trs[r.label] = tr;
  tbody.appendChild(tr);
});
function sortRows() {
  var col = D.columns.filter(function (c) { return c.key === sortKey; })[0];
  var rows = D.rows.slice();
  rows.sort(function (a, b) {
    var x = a[sortKey], y = b[sortKey];
    if (col.kind === 'num') {
      x = num(x); y = num(y);
      var xn = typeof x !== 'number' || isNaN(x), yn = typeof y !== 'number' || isNaN(y);
      if (xn || yn) return xn === yn ? 0 : (xn ? 1 : -1);
      return (x - y) * sortDir;
    }
    return String(x || '').localeCompare(String(y || '')) * sortDir;
  });
  rows.forEach(function (r) { tbody.appendChild(r._tr); });
  Array.prototype.forEach.call(thead.rows[0].cells, function (th) {
    var mark = th.getAttribute('data-key') === sortKey ? (sortDir > 0 ? ' ▲' : ' ▼') : '';
    th.textContent = th.textContent.replace(/ [▲▼]$/, '') + mark;
  });
}
var filter = document.getElementById('filter');
function applyFilter() {
  var q = filter.value.toLowerCase(), n = 0;
  D.rows.forEach(function (r) {
    var show = !q || r.label.toLowerCase().indexOf(q) >= 0 ||
      r.module_type.toLowerCase().indexOf(q) >= 0;
    r._tr.style.display = show ? '' : 'none'; if (show) n++;
  });
  document.getElementById('count').textContent = n + ' of ' + D.rows.length + ' tensors';
}
filter.addEventListener('input', applyFilter);
function pick(label) {
  Object.keys(trs).forEach(function (k) { trs[k].classList.remove('sel'); });
  if (trs[label]) { trs[label].classList.add('sel'); }
  if (D.cdfs[label]) { selCdf.value = label; drawCdf(); }
}

drawScatter();
drawAttribution();
if (D.problem && D.cdfs[D.problem]) selCdf.value = D.problem;
drawCdf();
sortRows();
applyFilter();
document.documentElement.setAttribute('data-ready', '1');
})();
'''
