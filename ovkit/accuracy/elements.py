"""One tensor pair element by element: the worst positions and the error distribution.

Both stream in chunks like :mod:`.metrics`; the report uses them for the tensor it details.
"""
import math

import numpy as np

from .common import row_label
from .manifest import AccuracyError, open_npy
from .resources import DEFAULT_CHUNK, flat_view


def _errors(A, B, by, T):
    """Per-element error of a float64 chunk: abs or rel (rel: NaN where a == 0 -> skipped)."""
    np.subtract(A, B, out=T)
    np.abs(T, out=T)
    if by == 'rel':
        with np.errstate(divide='ignore', invalid='ignore'):
            denom = np.abs(A)
            np.divide(T, denom, out=T)
            T[denom == 0] = np.nan
    fin = np.isfinite(A) & np.isfinite(B)
    if not fin.all():
        # a position that is NaN/inf on one side only (or inf vs -inf) is the worst error
        same = (A == B) | (np.isnan(A) & np.isnan(B))
        T[~fin] = np.where(same[~fin], 0.0, np.inf)
    return T


def top_errors(a, b, n=20, by='abs', chunk=DEFAULT_CHUNK):
    """The ``n`` positions with the largest error, streaming; list of dicts, worst first.

    ``by='abs'``: |a-b|; ``by='rel'``: |a-b|/|a| (positions with a == 0 are skipped, as in the
    metrics). A position finite on one side only ranks first (error inf).
    """
    if by not in ('abs', 'rel'):
        raise AccuracyError(f'--error-by must be abs or rel, not {by!r}')
    af, bf = flat_view(a), flat_view(b)
    shape = a.shape
    best_err = np.empty(0)
    best_idx = np.empty(0, np.int64)
    c = max(1, min(chunk, af.size))
    T = np.empty(c)
    for s in range(0, af.size, c):
        e = min(s + c, af.size)
        A = af[s:e].astype(np.float64)
        B = bf[s:e].astype(np.float64)
        err = _errors(A, B, by, T[:e - s])
        valid = np.flatnonzero(~np.isnan(err))
        if valid.size > n:
            valid = valid[np.argpartition(err[valid], -n)[-n:]]
        best_err = np.concatenate([best_err, err[valid]])
        best_idx = np.concatenate([best_idx, valid + s])
        if best_err.size > n:
            keep = np.argpartition(best_err, -n)[-n:]
            best_err, best_idx = best_err[keep], best_idx[keep]
    order = np.lexsort((best_idx, -best_err))
    rows = []
    for i in order:
        flat = int(best_idx[i])
        va, vb = float(af[flat]), float(bf[flat])
        index = tuple(int(x) for x in np.unravel_index(flat, shape)) if shape else ()
        rows.append(dict(rank=len(rows) + 1, flat_index=flat, index=index,
                         a=va, b=vb, abs_error=abs(va - vb) if math.isfinite(va - vb) else math.inf,
                         rel_error=(abs(va - vb) / abs(va)) if va != 0 and math.isfinite(va - vb)
                         else (math.nan if va == 0 else math.inf), error=float(best_err[i])))
    return rows


def error_histogram(a, b, by='abs', bins=200, chunk=DEFAULT_CHUNK):
    """Streaming histogram of per-element errors on log-spaced bins (two passes).

    Returns dict(edges, counts, zeros, nonfinite, total, max): ``zeros`` counts exact matches,
    ``nonfinite`` positions finite on one side only; a CDF plot needs nothing else.
    """
    af, bf = flat_view(a), flat_view(b)
    c = max(1, min(chunk, af.size))
    T = np.empty(c)
    lo, hi, zeros, nonfinite, total = math.inf, 0.0, 0, 0, 0

    def chunks():
        for s in range(0, af.size, c):
            e = min(s + c, af.size)
            err = _errors(af[s:e].astype(np.float64), bf[s:e].astype(np.float64), by,
                          T[:e - s])
            yield err[~np.isnan(err)]

    for err in chunks():
        total += err.size
        pos = err[(err > 0) & np.isfinite(err)]
        zeros += int(np.count_nonzero(err == 0))
        nonfinite += int(np.count_nonzero(np.isinf(err)))
        if pos.size:
            lo, hi = min(lo, float(pos.min())), max(hi, float(pos.max()))
    if not math.isfinite(lo):
        return dict(edges=np.array([]), counts=np.array([], np.int64), zeros=zeros,
                    nonfinite=nonfinite, total=total, max=hi)
    lo = max(lo, hi * 1e-15)
    llo, lhi = math.log10(lo), math.log10(hi)
    if lhi - llo < 1e-9:
        lhi = llo + 1e-9
    edges = np.logspace(llo, lhi, bins + 1)
    counts = np.zeros(bins, np.int64)
    for err in chunks():
        pos = err[(err > 0) & np.isfinite(err)]
        if pos.size:
            idx = np.floor((np.log10(pos) - llo) / (lhi - llo) * bins).astype(np.int64)
            counts += np.bincount(np.clip(idx, 0, bins - 1), minlength=bins)
    return dict(edges=edges, counts=counts, zeros=zeros, nonfinite=nonfinite, total=total,
                max=hi)


def tensor_detail(row, top_n=20, by='abs', bins=200):
    """Top-``top_n`` elements by error and (``bins`` > 0) the error histogram of one row."""
    if not (row.get('file_a') and row.get('file_b')):
        raise AccuracyError(f'{row_label(row)} exists on one side only; pick a compared tensor')
    a, b = open_npy(row['file_a']), open_npy(row['file_b'])
    if a.shape != b.shape:
        raise AccuracyError(f'{row_label(row)}: shapes {a.shape} vs {b.shape} differ; element-'
                            'wise errors need equal shapes')
    return dict(row=row, by=by, top=top_errors(a, b, top_n, by) if top_n else [],
                hist=error_histogram(a, b, by, bins) if bins else None)
