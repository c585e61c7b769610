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
mean_a, std_a, mean_b, std_b     population mean / std of each side (Chan's pairwise update,
                                 so a constant tensor gives std 0 up to rounding).
===============================  =============================================================

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
import contextlib
import ctypes
import math
import mmap
import os
import resource
from dataclasses import dataclass

import numpy as np

from .manifest import AccuracyError, open_npy

FP16_MAX = 65504.0
DEFAULT_CHUNK = 1 << 16  # 64 Ki elements: six scratch buffers, ~3 MiB, stay in cache
_RELEASE_BYTES = 8 << 20  # give mapped pages back every 8 MiB read

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
}
STAT_COLUMNS = ('mean_a', 'std_a', 'mean_b', 'std_b')
COUNT_COLUMNS = ('numel', 'compared', 'nan_a', 'inf_a', 'nan_b', 'inf_b', 'nonfinite_new_b',
                 'absmax_a', 'absmax_b')


@dataclass
class MetricSpec:
    name: str
    fn: object
    higher_is_better: bool
    description: str = ''


EXTRA_METRICS = {}


def register_metric(name, higher_is_better=False, description=''):
    """Decorator: register ``fn(a, b) -> float`` as an extra metric (a column in every report).

    ``a`` and ``b`` are float64 1-D arrays of the compared elements (finite on both sides).
    Comparisons run in forked workers, so register before calling :func:`compare_dumps` (or
    name the module with ``--metric-plugin``).
    """
    def wrap(fn):
        if name in BUILTIN_METRICS or name in STAT_COLUMNS or name in COUNT_COLUMNS:
            raise ValueError(f'metric name {name!r} is built in; choose another name')
        if name in EXTRA_METRICS and EXTRA_METRICS[name].fn is not fn:
            raise ValueError(f'metric {name!r} is already registered by '
                             f'{EXTRA_METRICS[name].fn.__module__}; choose another name')
        EXTRA_METRICS[name] = MetricSpec(name, fn, higher_is_better, description)
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
        self.kl_m = -math.inf  # running max of a
        self.kl_w = self.kl_e = self.kl_g = 0.0
        self.kl_overflow = False
        self.kl_c = None  # constant shift of b (KL is invariant to it)
        self.w32 = np.empty(chunk, np.float32)
        self.u = np.empty(chunk, np.float64)
        self.v = np.empty(chunk, np.float64)

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
        out.update(absmax_a=self.absmax_a if self.numel > self.nan_a + self.inf_a else math.nan,
                   absmax_b=self.absmax_b if self.numel > self.nan_b + self.inf_b else math.nan)
        if n == 0:
            out.update({m: math.nan for m in list(BUILTIN_METRICS) + list(STAT_COLUMNS)})
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
            kl_divergence=self.kl_divergence(), mean_a=self.mean_a,
            std_a=math.sqrt(max(self.m2_a, 0.0) / n), mean_b=self.mean_b,
            std_b=math.sqrt(max(self.m2_b, 0.0) / n))
        return out


def _flat(x):
    """1-D view in logical (C) order; copies only a non-C-contiguous array (rare: Fortran npy)."""
    x = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if x.ndim == 1:
        return x
    if x.flags.c_contiguous:
        return x.reshape(-1)
    return np.ascontiguousarray(x).reshape(-1)


class _PageReleaser:
    """Drop already-read pages of a memory map, so resident memory stays at a few chunks.

    The page cache keeps them; only this process' mapping lets go (MADV_DONTNEED on a
    read-only file mapping discards nothing).
    """

    def __init__(self, arr):
        self.mm = getattr(arr, '_mmap', None)
        self.base = 0
        if self.mm is not None:
            # np.memmap maps from an allocation-granularity-aligned offset before the data
            self.base = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY
        self.itemsize = arr.itemsize
        self.done = 0

    def release(self, elements_read, final=False):
        if self.mm is None or not hasattr(self.mm, 'madvise'):
            return
        end = self.base + elements_read * self.itemsize
        end -= end % mmap.PAGESIZE
        if end - self.done >= _RELEASE_BYTES or (final and end > self.done):
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, self.done, end - self.done)
            except (OSError, ValueError, AttributeError):
                self.mm = None
                return
            self.done = end


_BLAS = None


def _openblas_controls():
    """(get, set) of every OpenBLAS numpy has loaded (found in /proc/self/maps); [] elsewhere."""
    global _BLAS
    if _BLAS is not None:
        return _BLAS
    _BLAS = []
    try:
        with open('/proc/self/maps') as f:
            paths = {ln.split()[5] for ln in f if len(ln.split()) >= 6}
    except OSError:
        return _BLAS
    for path in sorted(p for p in paths if 'openblas' in os.path.basename(p).lower()):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ('scipy_openblas', 'openblas'):
            for suffix in ('64_', ''):
                get = getattr(lib, f'{prefix}_get_num_threads{suffix}', None)
                put = getattr(lib, f'{prefix}_set_num_threads{suffix}', None)
                if get is not None and put is not None:
                    _BLAS.append((get, put))
                    break
            else:
                continue
            break
    return _BLAS


@contextlib.contextmanager
def single_thread_blas():
    """Run BLAS on one thread inside the kernel.

    Our dot products are on cache-sized chunks; OpenBLAS would fork them to its threads,
    which then spin and steal the core from the next numpy call (measured: up to 20x slower
    on 2 busy cores). Parallelism comes from comparing pairs in separate processes instead.
    """
    controls = _openblas_controls()
    old = [get() for get, _ in controls]
    for _, put in controls:
        put(1)
    try:
        yield
    finally:
        for (_, put), n in zip(controls, old):
            put(n)


def stream_metrics(a, b, chunk=DEFAULT_CHUNK):
    """All built-in metrics of two same-shape arrays (memmaps welcome) in one pass."""
    with single_thread_blas():
        return _stream_metrics(a, b, chunk)


def _stream_metrics(a, b, chunk):
    af, bf = _flat(a), _flat(b)
    if af.size != bf.size:
        raise ValueError(f'sizes differ: {af.size} vs {bf.size}')
    n = af.size
    c = max(1, min(int(chunk), n))
    acc = _Accumulator(c)
    bufs = [np.empty(c, np.float64) for _ in range(4)]
    rel_a, rel_b = _PageReleaser(af), _PageReleaser(bf)
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


def _numeric_kind(dtype):
    return dtype.kind in 'biuf'


_RSS_AT_START = None


def _status_kb(field):
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith(field + ':'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_rss():
    """Restart the peak-RSS counter (VmHWM) at the current RSS (Linux >= 4.0), so a worker
    measures what comparing costs, not what its parent held when it forked."""
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def compare_pair(task):
    """Worker: compare two .npy files; never raises, problems become ``reason``.

    ``task``: dict(file_a, file_b, chunk, extra (names of extra metrics), trace_memory).
    Returns the metric dict plus shape_a/shape_b, saved dtypes, ``reason`` (list of str),
    ``peak_rss_kb`` of the worker and, with ``trace_memory`` (Linux), ``rss_growth_kb``: peak
    resident memory of this process above its level at its first pair (for the benchmark).
    """
    global _RSS_AT_START
    trace = task.get('trace_memory', False)
    if trace and _RSS_AT_START is None:  # first pair in this process
        _RSS_AT_START = _status_kb('VmRSS') if _reset_peak_rss() else -1
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
        if not _numeric_kind(arr.dtype):
            reasons.append(f'{path}: dtype {arr.dtype} is not a real number type; not compared')
            continue
        arrs[side] = arr
    if len(arrs) == 2:
        a, b = arrs['a'], arrs['b']
        if a.shape != b.shape:
            reasons.append(f'shape mismatch {tuple(a.shape)} vs {tuple(b.shape)}: not compared')
        elif a.size == 0:
            reasons.append('empty tensor (0 elements): nothing to compare')
        else:
            if a.dtype.kind != b.dtype.kind:
                reasons.append(f'dtype kinds differ ({a.dtype} vs {b.dtype}); compared as float64')
            out.update(stream_metrics(a, b, task.get('chunk', DEFAULT_CHUNK)))
            for name in task.get('extra', ()):
                spec = EXTRA_METRICS.get(name)
                if spec is None:
                    reasons.append(f'extra metric {name!r} is not registered in the worker; '
                                   'pass its module with --metric-plugin')
                    out[name] = math.nan
                    continue
                A, B = finite_pairs(a, b)
                try:
                    out[name] = float(spec.fn(A, B)) if A.size else math.nan
                except Exception as e:  # a plug-in's bug must not kill the report
                    out[name] = math.nan
                    reasons.append(f'metric {name} failed: {type(e).__name__}: {e}')
                del A, B
        del a, b
    arrs.clear()
    out['reason'] = reasons
    out['peak_rss_kb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if trace and _RSS_AT_START >= 0:
        out['rss_growth_kb'] = max(0, _status_kb('VmHWM') - _RSS_AT_START)
    return out


# ----------------------------------------------------------------------------- one tensor
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
    af, bf = _flat(a), _flat(b)
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
    af, bf = _flat(a), _flat(b)
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
