"""Metrics of one tensor pair, computed in one streaming pass over memory-mapped arrays.

``a`` is the reference (dump A, e.g. fp32 on CPU), ``b`` the candidate (dump B). Each chunk
of ``chunk`` elements is copied to float64 buffers that stay in cache, and every metric is
accumulated from them in float64, so memory is a few chunk buffers whatever the tensor size.

Metrics (built in; ``d = a - b``; sums over the *compared elements*, defined below):

===============================  =============================================================
cosine_similarity                sum(a*b) / (||a|| * ||b||), clipped to [-1, 1]. Both norms 0:
                                 1.0 (identical zero tensors); exactly one norm 0: 0.0.
relative_euclidean_distance      ||d|| / ||a||. ||a|| = 0: 0.0 if ||d|| = 0 else inf.
max_absolute_error               max |d|
mean_absolute_error              mean |d|
root_mean_square_error           sqrt(mean d^2)
max_relative_error               max |d| / |a| over elements with a != 0
mean_relative_error              mean of |d| / |a| over elements with a != 0
accumulated_relative_error       sum of |d| / |a| over elements with a != 0 (the vendor
                                 "accumulated" error; mean_relative_error is it / count)
kl_divergence                    KL(softmax(a) || softmax(b)) over the flattened tensor,
                                 computed without forming softmax (no underflow to 0);
                                 relative accuracy ~1e-7, exactly 0 for identical tensors.
                                 b is offset so that the first chunk's maxima agree (KL is
                                 invariant to it); inf when b then exceeds max(a) by > 700
                                 (exp overflows; the divergence is then hundreds of nats).
                                 Sensitive mostly to the largest values, as softmax is.
sqnr_db                          signal-to-quantisation-noise ratio 10 log10(sum a^2 / sum d^2)
                                 in dB (higher is better). d = 0 everywhere: inf; a = 0
                                 everywhere and d != 0: -inf. fp16 rounding of one op alone
                                 gives ~68 dB, bf16 ~50 dB; cosine 0.99 is ~17 dB.
error_ratio_1e-3, _5e-3          share of the elements whose relative error exceeds 1/1000
                                 (5/1000): |d| > t |a|, over every position where a is finite;
                                 a position where b is NaN/inf (a finite) counts as exceeding,
                                 a == 0 exceeds iff b != 0. (Ascend's tools report the
                                 complement, the share *within* 1 and 5 per mille.)
mean_a, std_a, mean_b, std_b     population mean / std of each side (Chan's pairwise update,
                                 so a constant tensor gives std 0 up to rounding).
===============================  =============================================================

Grade (:func:`grade`, the ``grade`` column; thresholds in :data:`GRADE_THRESHOLDS`):

* ``error``: b has NaN/inf where a is finite, a's magnitude overflows fp16 where b is fp16, or
  sqnr_db < 20 (about cosine 0.99: the output is visibly different);
* ``warn``: sqnr_db < 40, or error_ratio_5e-3 > 0.5 (most elements are off by more than
  0.5%, more than one fp16 or bf16 rounding gives; a healthy fp16 ResNet has ~10% there,
  all near zero, where a small absolute error is a large relative one);
* ``pass`` otherwise; ``n/a`` when the pair was not compared (see its ``reason``).

Zeros, NaN and inf:

* **Compared elements** are the positions where *both* a and b are finite. NaN and inf are
  never folded into a metric; they are counted instead (``nan_a``, ``inf_a``, ``nan_b``,
  ``inf_b``, ``nonfinite_new_b`` = positions finite in a but NaN/inf in b), and the comparison
  turns them into the overflow flag and a reason. If no position is finite on both sides every
  metric is NaN.
* **Zeros in a** make the relative error undefined, so the three relative metrics skip those
  positions (the absolute metrics still see them). If a is zero at every compared position the
  relative metrics are 0.0 when b is too, and NaN otherwise.
* ``absmax_a`` / ``absmax_b`` are the largest finite magnitudes of each side over *all* its
  finite positions (an element that overflowed in b still counts for a's fp16 range check).
* An empty tensor has no metric (NaN) and gets a reason in the comparison.

Extra metrics plug in with :func:`register_metric`: one function ``fn(a, b) -> float`` that
receives the compared elements of both sides as float64 1-D arrays (so it needs memory for
them; the built-ins do not).
"""
import math
from dataclasses import dataclass

import numpy as np

from .common import finite
from .manifest import AccuracyError
from .resources import DEFAULT_CHUNK, PageReleaser, flat_view, single_thread_blas

FP16_MAX = 65504.0

# name -> (higher_is_better, one-line description)
BUILTIN_METRICS = {
    'cosine_similarity': (True, 'sum(a*b) / (|a| |b|)'),
    'relative_euclidean_distance': (False, '|a-b| / |a|'),
    'max_absolute_error': (False, 'max |a-b|'),
    'mean_absolute_error': (False, 'mean |a-b|'),
    'root_mean_square_error': (False, 'sqrt(mean (a-b)^2)'),
    'max_relative_error': (False, 'max |a-b|/|a| (a != 0)'),
    'mean_relative_error': (False, 'mean |a-b|/|a| (a != 0)'),
    'accumulated_relative_error': (False, 'sum |a-b|/|a| (a != 0)'),
    'kl_divergence': (False, 'KL(softmax(a) || softmax(b))'),
    'sqnr_db': (True, '10 log10(sum a^2 / sum (a-b)^2)'),
    'error_ratio_1e-3': (False, 'share of |a-b| > |a| / 1000'),
    'error_ratio_5e-3': (False, 'share of |a-b| > 5 |a| / 1000'),
}
GRADE_THRESHOLDS = dict(error_sqnr_db=20.0, warn_sqnr_db=40.0, warn_error_ratio_5e_3=0.5)
GRADES = ('pass', 'warn', 'error', 'n/a')
_RATIO_T = (1e-3, 5e-3)
STAT_COLUMNS = ('mean_a', 'std_a', 'mean_b', 'std_b')
COUNT_COLUMNS = ('numel', 'compared', 'nan_a', 'inf_a', 'nan_b', 'inf_b', 'nonfinite_new_b',
                 'absmax_a', 'absmax_b')


@dataclass
class MetricSpec:
    name: str
    fn: object
    higher_is_better: bool


EXTRA_METRICS = {}


def register_metric(name, higher_is_better=False):
    """Decorator: register ``fn(a, b) -> float`` as an extra metric (a column in every report).

    ``a`` and ``b`` are float64 1-D arrays of the compared elements (finite on both sides).
    Comparisons run in forked workers, so register before calling :func:`compare_dumps` (or
    name the module with ``--metric-plugin``).

    Args:
        name: column name; must not be a built-in one.
        higher_is_better: direction, for the advisor and the sorting of reports.
    """
    def wrap(fn):
        if name in BUILTIN_METRICS or name in STAT_COLUMNS or name in COUNT_COLUMNS:
            raise ValueError(f'metric name {name!r} is built in; choose another name')
        if name in EXTRA_METRICS and EXTRA_METRICS[name].fn is not fn:
            raise ValueError(f'metric {name!r} is already registered by '
                             f'{EXTRA_METRICS[name].fn.__module__}; choose another name')
        EXTRA_METRICS[name] = MetricSpec(name, fn, higher_is_better)
        return fn
    return wrap


def unregister_metric(name):
    EXTRA_METRICS.pop(name, None)


def metric_names():
    return list(BUILTIN_METRICS) + list(EXTRA_METRICS)


def higher_is_better(name):
    """Direction of a metric; AccuracyError for an unknown name (lists the known ones)."""
    if name in BUILTIN_METRICS:
        return BUILTIN_METRICS[name][0]
    if name in EXTRA_METRICS:
        return EXTRA_METRICS[name].higher_is_better
    if name in STAT_COLUMNS:
        return False
    raise AccuracyError(f'unknown metric {name!r}; choose one of {", ".join(metric_names())}')


# g(d) = exp(-d) - 1 + d = d^2 * (1/2 - d/6 + d^2/24 - d^3/120 + ...): Taylor coefficients of
# g / d^2. For |d| <= 1/32 the truncation error is below 3e-9 relative (well inside KL's
# documented 1e-7); larger |d| takes the exact branch in _kl.
_G_COEF = (1 / 2, -1 / 6, 1 / 24, -1 / 120)
_G_SMALL = 1 / 32
_KL_OVERFLOW = 700.0  # b above a's max by this much: exp overflows, KL reported as inf


class _Accumulator:
    """Running float64 state of every built-in metric; ``update`` takes one chunk.

    KL(softmax(a) || softmax(b)) is accumulated as KL = G - h(G - E) with weights
    w = exp(a - max a), E = sum(w d) / sum(w), G = sum(w g(d)) / sum(w), g(d) = e^-d - 1 + d
    >= 0 and h(s) = s - log1p(s) >= 0 (from sum(e^b) / sum(e^a) = E_p[e^-d]). Only the
    weights need an exp, and an error in a weight only moves that element's share, so a
    float32 (SIMD) exp is enough: KL keeps a relative accuracy of ~1e-7 and stays exactly 0
    for identical tensors, at a fraction of the cost of two float64 exps.
    """

    def __init__(self, chunk):
        self.numel = self.n = 0
        self.nan_a = self.inf_a = self.nan_b = self.inf_b = self.new_nf_b = 0
        self.s_ab = self.s_aa = self.s_bb = self.s_dd = self.s_absd = 0.0
        self.max_absd = 0.0
        self.n_rel = 0
        self.s_rel = self.max_rel = 0.0
        self.mean_a = self.m2_a = self.mean_b = self.m2_b = 0.0
        self.absmax_a = self.absmax_b = 0.0
        self.n_exceed = [0, 0]  # elements with |d| > t |a|, t in _RATIO_T
        self.kl_m = -math.inf  # running max of a
        self.kl_w = self.kl_e = self.kl_g = 0.0
        self.kl_overflow = False
        self.kl_c = None  # constant shift of b (KL is invariant to it)
        self.w32 = np.empty(chunk, np.float32)
        self.u = np.empty(chunk, np.float64)
        self.v = np.empty(chunk, np.float64)
        self.mask = np.empty(chunk, np.bool_)

    def update(self, A, B, D, T):
        """A, B: float64 chunk (overwritten only in D/T); D, T: scratch of the same size."""
        self.numel += A.size
        s_aa = float(A.dot(A))
        s_bb = float(B.dot(B))
        if not (math.isfinite(s_aa) and math.isfinite(s_bb)):
            A, B, D, T = self._drop_nonfinite(A, B, D, T)
            if A.size == 0:
                return
            s_aa, s_bb = float(A.dot(A)), float(B.dot(B))
        k = A.size
        U, W32 = self.u[:k], self.w32[:k]
        self.n += k
        self.s_aa += s_aa
        self.s_bb += s_bb
        self.s_ab += float(A.dot(B))
        np.subtract(A, B, out=D)
        self.s_dd += float(D.dot(D))
        sum_a, sum_b = float(A.sum()), float(B.sum())
        self.mean_a, self.m2_a = self._chan(A, T, k, sum_a, s_aa, self.mean_a, self.m2_a)
        self.mean_b, self.m2_b = self._chan(B, T, k, sum_b, s_bb, self.mean_b, self.m2_b)

        ma, mb = float(A.max()), float(B.max())
        self.absmax_b = max(self.absmax_b, mb, -float(B.min()))

        np.abs(D, out=U)  # |d|, kept signed in D for KL
        absd_max = float(U.max())
        self.s_absd += float(U.sum())
        self.max_absd = max(self.max_absd, absd_max)

        # relative error |d|/|a|: positions with a == 0 get denominator inf -> 0, and are
        # left out of the count, so they are skipped (relative errors are >= 0).
        np.abs(A, out=T)
        self.absmax_a = max(self.absmax_a, float(T.max()))
        V, M = self.v[:k], self.mask[:k]
        for i, t in enumerate(_RATIO_T):  # |d| > t |a|: no division, a == 0 handled
            np.multiply(T, t, out=V)
            np.greater(U, V, out=M)
            self.n_exceed[i] += int(np.count_nonzero(M))
        nz = int(np.count_nonzero(T))
        if nz:
            if nz < k:
                np.copyto(T, np.inf, where=T == 0)
            np.divide(U, T, out=T)
            self.n_rel += nz
            self.s_rel += float(T.sum())
            self.max_rel = max(self.max_rel, float(T.max()))

        self._kl(A, B, D, T, U, W32, ma, mb, absd_max)

    def _kl(self, A, B, D, T, U, W32, ma, mb, absd_max):
        if self.kl_c is None:
            # KL is invariant to b + const: align the maxima of the first chunk so that a
            # large uniform offset cannot overflow or underflow exp(-d)
            self.kl_c = mb - ma if abs(mb - ma) > 1.0 else 0.0
        c = self.kl_c
        if ma > self.kl_m:
            scale = math.exp(self.kl_m - ma)
            self.kl_w *= scale
            self.kl_e *= scale
            self.kl_g *= scale
            self.kl_m = ma
        m = self.kl_m
        if mb - c - m > _KL_OVERFLOW:
            self.kl_overflow = True
            return
        if c:
            D = np.add(D, c, out=self.v[:D.size])  # d' = a - (b - c)
        np.subtract(A, m, out=T)
        np.copyto(W32, T, casting='same_kind')
        np.exp(W32, out=W32)
        np.copyto(T, W32)  # weights w = exp(a - m); float32 accuracy is enough (see class)
        with np.errstate(over='ignore', invalid='ignore'):
            np.multiply(D, _G_COEF[3], out=U)  # Horner on g(d) / d^2, then * d^2
            for coef in _G_COEF[2:0:-1]:
                U += coef
                U *= D
            U += _G_COEF[0]
            U *= D
            U *= D
        big_part = 0.0
        if absd_max + abs(c) > _G_SMALL:  # bound on max |d + c|
            # large |d|: float64 weights, and w g(d) = exp(b - c - m) - w + w d, which cannot
            # overflow (b - c - m <= 700); U is zeroed there so each element counts once
            idx = np.flatnonzero(np.abs(D) > _G_SMALL)
            w = np.exp(A[idx] - m)
            T[idx] = w
            U[idx] = 0.0
            big_part = (float(np.exp(B[idx] - (c + m)).sum()) - float(w.sum()) +
                        float(w.dot(D[idx])))
        self.kl_w += float(T.sum())
        self.kl_e += float(T.dot(D))
        self.kl_g += float(T.dot(U)) + big_part

    def _chan(self, X, T, k, sum_c, sq_c, mean, m2):
        """Chan et al. pairwise update of (mean, M2) with this chunk."""
        n_old = self.n - k
        mean_c = sum_c / k
        m2_c = sq_c - sum_c * mean_c
        if not m2_c > 1e-6 * sq_c:  # ill-conditioned (near-constant chunk): exact two-pass
            np.subtract(X, mean_c, out=T)
            m2_c = float(T.dot(T))
        if n_old == 0:
            return mean_c, m2_c
        delta = mean_c - mean
        return mean + delta * k / self.n, m2 + m2_c + delta * delta * n_old * k / self.n

    def _drop_nonfinite(self, A, B, D, T):
        fa, fb = np.isfinite(A), np.isfinite(B)
        nan_a, nan_b = int(np.isnan(A).sum()), int(np.isnan(B).sum())
        self.nan_a += nan_a
        self.nan_b += nan_b
        self.inf_a += A.size - int(fa.sum()) - nan_a
        self.inf_b += B.size - int(fb.sum()) - nan_b
        self.new_nf_b += int(np.count_nonzero(fa & ~fb))
        # magnitudes of all finite values of each side: an element that overflows in b
        # must still count for a's range
        if fa.any():
            self.absmax_a = max(self.absmax_a, float(np.abs(A[fa]).max()))
        if fb.any():
            self.absmax_b = max(self.absmax_b, float(np.abs(B[fb]).max()))
        both = fa & fb
        A, B = A[both], B[both]
        return A, B, D[:A.size], T[:A.size]

    def kl_divergence(self):
        if self.kl_overflow:
            return math.inf
        e = self.kl_e / self.kl_w
        g = self.kl_g / self.kl_w
        s = g - e  # E_p[e^-d] - 1 > -1
        if s <= -1.0:  # E_p[e^-d] underflowed: softmax(b) has its mass far from softmax(a)
            return math.inf
        if abs(s) < 1e-4:
            h = s * s * (0.5 - s / 3 + s * s / 4)  # s - log1p(s) without cancellation
        else:
            h = s - math.log1p(s)
        return max(0.0, g - h)

    def result(self):
        n = self.n
        out = dict(numel=self.numel, compared=n, nan_a=self.nan_a, inf_a=self.inf_a,
                   nan_b=self.nan_b, inf_b=self.inf_b, nonfinite_new_b=self.new_nf_b)
        finite_a = self.numel - self.nan_a - self.inf_a
        for t, count in zip(('1e-3', '5e-3'), self.n_exceed):
            out[f'error_ratio_{t}'] = ((count + self.new_nf_b) / finite_a if finite_a
                                       else math.nan)
        out.update(absmax_a=self.absmax_a if self.numel > self.nan_a + self.inf_a else math.nan,
                   absmax_b=self.absmax_b if self.numel > self.nan_b + self.inf_b else math.nan)
        if n == 0:
            out.update({m: math.nan for m in list(BUILTIN_METRICS) + list(STAT_COLUMNS)
                        if m not in out})
            return out
        na, nb = math.sqrt(self.s_aa), math.sqrt(self.s_bb)
        if na == 0 and nb == 0:
            cos = 1.0
        elif na == 0 or nb == 0:
            cos = 0.0
        else:
            # sqrt(|a|^2 |b|^2) is exact for a == b (sqrt(x*x) == x), unlike |a| * |b|
            prod = self.s_aa * self.s_bb
            denom = math.sqrt(prod) if math.isfinite(prod) and prod > 0 else na * nb
            cos = min(1.0, max(-1.0, self.s_ab / denom))
        nd = math.sqrt(self.s_dd)
        if na > 0:
            red = nd / na
        else:
            red = 0.0 if nd == 0 else math.inf
        if self.n_rel:
            max_rel, mean_rel, acc_rel = self.max_rel, self.s_rel / self.n_rel, self.s_rel
        else:
            max_rel = mean_rel = acc_rel = 0.0 if self.s_bb == 0 else math.nan
        out.update(
            cosine_similarity=cos, relative_euclidean_distance=red,
            max_absolute_error=self.max_absd, mean_absolute_error=self.s_absd / n,
            root_mean_square_error=math.sqrt(self.s_dd / n), max_relative_error=max_rel,
            mean_relative_error=mean_rel, accumulated_relative_error=acc_rel,
            kl_divergence=self.kl_divergence(), sqnr_db=_sqnr_db(self.s_aa, self.s_dd),
            mean_a=self.mean_a,
            std_a=math.sqrt(max(self.m2_a, 0.0) / n), mean_b=self.mean_b,
            std_b=math.sqrt(max(self.m2_b, 0.0) / n))
        return out


def _sqnr_db(s_aa, s_dd):
    if s_dd == 0:
        return math.inf
    if s_aa == 0:
        return -math.inf
    return 10.0 * math.log10(s_aa / s_dd)


def grade(row, thresholds=None):
    """``pass`` / ``warn`` / ``error`` / ``n/a`` of a comparison row (see module docstring).

    Args:
        row: dict with sqnr_db, error_ratio_5e-3, nonfinite_new_b and overflow.
        thresholds: overrides of :data:`GRADE_THRESHOLDS`.
    """
    th = dict(GRADE_THRESHOLDS, **(thresholds or {}))
    if (row.get('nonfinite_new_b') or 0) > 0 or row.get('overflow'):
        return 'error'
    sqnr, ratio = row.get('sqnr_db'), row.get('error_ratio_5e-3')
    if not isinstance(sqnr, (int, float)) or isinstance(sqnr, bool) or math.isnan(sqnr):
        return 'n/a'
    if sqnr < th['error_sqnr_db']:
        return 'error'
    if sqnr < th['warn_sqnr_db'] or (finite(ratio) and ratio > th['warn_error_ratio_5e_3']):
        return 'warn'
    return 'pass'


def stream_metrics(a, b, chunk=DEFAULT_CHUNK):
    """All built-in metrics of two same-shape arrays (memmaps welcome) in one pass."""
    with single_thread_blas():
        return _stream_metrics(a, b, chunk)


def _stream_metrics(a, b, chunk):
    af, bf = flat_view(a), flat_view(b)
    if af.size != bf.size:
        raise ValueError(f'sizes differ: {af.size} vs {bf.size}')
    n = af.size
    c = max(1, min(int(chunk), n))
    acc = _Accumulator(c)
    bufs = [np.empty(c, np.float64) for _ in range(4)]
    rel_a, rel_b = PageReleaser(af), PageReleaser(bf)
    for s in range(0, n, c):
        e = min(s + c, n)
        A, B, D, T = (buf[:e - s] for buf in bufs)
        np.copyto(A, af[s:e], casting='unsafe')
        np.copyto(B, bf[s:e], casting='unsafe')
        acc.update(A, B, D, T)
        rel_a.release(e)
        rel_b.release(e)
    rel_a.release(n, final=True)
    rel_b.release(n, final=True)
    return acc.result()



def finite_pairs(a, b):
    """float64 1-D arrays of the positions finite on both sides (for extra metrics)."""
    A = np.asarray(a, dtype=np.float64).reshape(-1)
    B = np.asarray(b, dtype=np.float64).reshape(-1)
    both = np.isfinite(A) & np.isfinite(B)
    if both.all():
        return A, B
    return A[both], B[both]
