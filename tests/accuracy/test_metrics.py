"""Every streaming metric against an independent numpy/scipy computation.

The reference here is written the obvious way (whole arrays, scipy where scipy has it) and
shares no code with ovkit.accuracy.metrics. Small chunk sizes force many chunk boundaries.
"""
import math

import numpy as np
import pytest
from scipy.spatial.distance import cosine as scipy_cosine_distance
from scipy.special import softmax
from scipy.stats import entropy

from ovkit.accuracy.compare import compare_pair
from ovkit.accuracy.elements import error_histogram, top_errors
from ovkit.accuracy.metrics import (
    BUILTIN_METRICS,
    FP16_MAX,
    GRADE_THRESHOLDS,
    grade,
    register_metric,
    stream_metrics,
    unregister_metric,
)


def reference(a, b):
    """Whole-array float64 reference on the positions finite on both sides."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    fa = np.isfinite(a)
    with np.errstate(invalid='ignore'):
        ratios = {f'error_ratio_{t}': np.sum(fa & (~np.isfinite(b) | (
            np.abs(a - b) > float(t) * np.abs(a)))) / fa.sum() for t in ('1e-3', '5e-3')}
    keep = fa & np.isfinite(b)
    a, b = a[keep], b[keep]
    d = a - b
    nz = a != 0
    rel = np.abs(d[nz]) / np.abs(a[nz])
    with np.errstate(divide='ignore', invalid='ignore'):
        sqnr = 10 * np.log10(np.sum(a ** 2) / np.sum(d ** 2))
    return dict(**ratios, sqnr_db=sqnr,
        cosine_similarity=1.0 - scipy_cosine_distance(a, b),
        relative_euclidean_distance=np.linalg.norm(d) / np.linalg.norm(a),
        max_absolute_error=np.max(np.abs(d)),
        mean_absolute_error=np.mean(np.abs(d)),
        root_mean_square_error=np.sqrt(np.mean(d ** 2)),
        max_relative_error=rel.max() if rel.size else np.nan,
        mean_relative_error=rel.mean() if rel.size else np.nan,
        accumulated_relative_error=rel.sum() if rel.size else np.nan,
        kl_divergence=entropy(softmax(a), softmax(b)),
        mean_a=np.mean(a), std_a=np.std(a), mean_b=np.mean(b), std_b=np.std(b),
        absmax_a=np.abs(a).max(), absmax_b=np.abs(b).max(), compared=a.size)


def assert_matches(got, ref, rtol=1e-9, atol=1e-12, skip=()):
    for k, v in ref.items():
        if k in skip:
            continue
        # KL's documented accuracy is ~1e-7 relative (float32 softmax weights)
        tol = max(rtol, 1e-6) if k == 'kl_divergence' else rtol
        assert got[k] == pytest.approx(v, rel=tol, abs=atol, nan_ok=True), k


RNG = np.random.default_rng(0)


@pytest.mark.parametrize('chunk', [7, 1000, 1 << 16])
@pytest.mark.parametrize('shape', [(10007,), (3, 17, 29), (1,)])
def test_random_pairs_match_reference(shape, chunk):
    a = RNG.standard_normal(shape).astype(np.float32)
    b = (a + 0.01 * RNG.standard_normal(shape)).astype(np.float32)
    got = stream_metrics(a, b, chunk=chunk)
    assert got['numel'] == a.size and got['compared'] == a.size
    assert_matches(got, reference(a, b))


@pytest.mark.parametrize('noise', [1e-7, 1e-4, 0.02, 0.5])
def test_kl_small_and_large_differences(noise):
    """|d| <= 1/32 takes the polynomial path, larger |d| the expm1 path; both agree."""
    a = RNG.standard_normal(30000) * 3
    b = a + RNG.standard_normal(30000) * noise
    got = stream_metrics(a, b, chunk=4096)['kl_divergence']
    # extended-precision log-softmax: at KL ~ 1e-15 a float64 reference is itself off by ~1%
    al, bl = a.astype(np.longdouble), b.astype(np.longdouble)
    la = al - al.max()
    la -= np.log(np.sum(np.exp(la)))
    lb = bl - bl.max()
    lb -= np.log(np.sum(np.exp(lb)))
    ref = float(np.sum(np.exp(la) * (la - lb)))
    extended = np.finfo(np.longdouble).eps < 1e-18
    assert got == pytest.approx(ref, rel=1e-4 if noise < 1e-6 else 1e-6,
                                abs=1e-19 if extended else 1e-15)
    assert got > 0


def test_kl_overflow_is_inf_and_shift_invariant():
    a = np.zeros(10)
    b = np.zeros(10)
    b[3] = 800.0  # softmax(b): a point mass; KL = 0.9 (ln 0.1 + 800) + 0.1 ln 0.1
    assert stream_metrics(a, b)['kl_divergence'] == pytest.approx(720 + math.log(0.1))
    # the same jump in a later chunk than the first (which fixes the offset): exp would
    # overflow, reported as inf (documented)
    b = np.zeros(10)
    b[7] = 800.0
    assert stream_metrics(a, b, chunk=5)['kl_divergence'] == math.inf
    # softmax ignores a constant offset, even a huge one
    a = RNG.standard_normal(5000)
    b = a - 900.0
    b[10] += 0.5
    got = stream_metrics(a, b, chunk=1000)['kl_divergence']
    assert got == pytest.approx(stream_metrics(a, b + 900.0)['kl_divergence'], rel=1e-6)
    assert got > 0


def test_large_range_kl_and_scale():
    # logits spread over a wide range: softmax underflows for most elements; KL must agree
    a = (RNG.standard_normal(5000) * 30).astype(np.float64)
    b = a + RNG.standard_normal(5000) * 0.5
    got = stream_metrics(a, b, chunk=333)
    assert_matches(got, reference(a, b), rtol=1e-7, atol=1e-10)
    assert got['kl_divergence'] > 0


def test_uncorrelated_and_opposite():
    a = RNG.standard_normal(4096)
    got = stream_metrics(a, -a, chunk=100)
    assert got['cosine_similarity'] == pytest.approx(-1.0)
    assert got['relative_euclidean_distance'] == pytest.approx(2.0)
    b = RNG.standard_normal(4096)
    assert_matches(stream_metrics(a, b, chunk=100), reference(a, b))


def test_tensors_with_zeros_skip_relative_only():
    a = np.maximum(RNG.standard_normal(20000), 0).astype(np.float32)  # ~half exact zeros
    b = a + (RNG.standard_normal(20000) * 1e-3).astype(np.float32)
    b[::7] = 0
    got = stream_metrics(a, b, chunk=999)
    ref = reference(a, b)
    assert_matches(got, ref)
    # the absolute metrics do see the positions where a == 0 and b != 0
    zeros = a == 0
    assert got['max_absolute_error'] >= np.abs(b[zeros]).max()


def test_identical_tensors_are_exact():
    a = RNG.standard_normal((64, 33)).astype(np.float32)
    got = stream_metrics(a, a.copy(), chunk=100)
    assert got['cosine_similarity'] == 1.0
    for m in ('relative_euclidean_distance', 'max_absolute_error', 'mean_absolute_error',
              'root_mean_square_error', 'max_relative_error', 'mean_relative_error',
              'accumulated_relative_error', 'kl_divergence'):
        assert got[m] == 0.0, m
    assert_matches(got, reference(a, a))


def test_constant_tensors():
    a = np.full(12345, 3.25, np.float32)
    b = np.full(12345, 3.5, np.float32)
    got = stream_metrics(a, b, chunk=1000)
    ref = reference(a, b)
    assert_matches(got, ref, atol=1e-10)
    assert got['std_a'] == pytest.approx(0.0, abs=1e-12)
    assert got['cosine_similarity'] == pytest.approx(1.0)  # same direction
    assert got['kl_divergence'] == pytest.approx(0.0, abs=1e-12)  # same (uniform) softmax
    assert got['max_relative_error'] == pytest.approx(0.25 / 3.25)


def test_all_zero_tensors():
    z = np.zeros(1000, np.float32)
    got = stream_metrics(z, z.copy())
    assert got['cosine_similarity'] == 1.0
    assert got['relative_euclidean_distance'] == 0.0
    assert got['max_relative_error'] == 0.0 and got['mean_relative_error'] == 0.0
    nonzero = np.full(1000, 1e-3, np.float32)
    got = stream_metrics(z, nonzero)
    assert got['cosine_similarity'] == 0.0  # one norm zero
    assert got['relative_euclidean_distance'] == math.inf
    assert math.isnan(got['max_relative_error'])  # undefined: every a is 0, b is not
    assert got['max_absolute_error'] == pytest.approx(1e-3)
    got = stream_metrics(nonzero, z)
    assert got['cosine_similarity'] == 0.0
    assert got['relative_euclidean_distance'] == pytest.approx(1.0)


def test_nan_and_inf_are_counted_not_averaged():
    a = RNG.standard_normal(5000)
    b = a + RNG.standard_normal(5000) * 1e-2
    a[[3, 400]] = np.nan
    a[[17]] = np.inf
    b[[3, 999, 1000]] = np.nan  # position 3: NaN on both sides
    b[[2000]] = -np.inf
    b[[17]] = np.inf
    got = stream_metrics(a, b, chunk=256)
    assert got['nan_a'] == 2 and got['inf_a'] == 1
    assert got['nan_b'] == 3 and got['inf_b'] == 2
    assert got['nonfinite_new_b'] == 3  # 999, 1000, 2000: finite in a, not in b
    assert got['compared'] == 5000 - 6
    assert_matches(got, reference(a, b), skip=('absmax_a', 'absmax_b'))
    for m in BUILTIN_METRICS:
        assert math.isfinite(got[m]), m
    # magnitudes cover every finite value of each side, compared or not
    assert got['absmax_a'] == np.abs(a[np.isfinite(a)]).max()
    assert got['absmax_b'] == np.abs(b[np.isfinite(b)]).max()


def test_no_finite_position():
    a = np.full(10, np.nan)
    got = stream_metrics(a, np.ones(10))
    assert got['compared'] == 0
    assert all(math.isnan(got[m]) for m in BUILTIN_METRICS)


def test_integer_and_bool_dtypes():
    a = RNG.integers(-50, 50, 3000)
    b = a + RNG.integers(-1, 2, 3000)
    assert_matches(stream_metrics(a.astype(np.int64), b.astype(np.int32), chunk=100),
                   reference(a, b))
    m = RNG.random(100) > 0.5
    got = stream_metrics(m, m.copy())
    assert got['cosine_similarity'] == 1.0 and got['max_absolute_error'] == 0.0


def test_fp16_side_matches_reference():
    a = RNG.standard_normal(7000).astype(np.float32) * 100
    b = a.astype(np.float16)
    got = stream_metrics(a, b, chunk=512)
    assert_matches(got, reference(a, b))
    assert got['max_relative_error'] <= 2 ** -11 + 1e-12  # fp16 rounding bound


def test_compare_pair_files_memmap(tmp_path):
    a = RNG.standard_normal((50, 400)).astype(np.float32)
    b = (a * 1.001).astype(np.float32)
    np.save(tmp_path / 'a.npy', a)
    np.save(tmp_path / 'b.npy', b)
    got = compare_pair(dict(file_a=str(tmp_path / 'a.npy'), file_b=str(tmp_path / 'b.npy'),
                            chunk=1000))
    assert got['reason'] == []
    assert got['shape_a'] == [50, 400]
    assert_matches(got, reference(a, b))
    # Fortran-ordered file: compared in logical order, not memory order
    np.save(tmp_path / 'f.npy', np.asfortranarray(b))
    got = compare_pair(dict(file_a=str(tmp_path / 'a.npy'), file_b=str(tmp_path / 'f.npy')))
    assert got['max_absolute_error'] == pytest.approx(np.abs(a - b).max())


def test_compare_pair_problems_become_reasons(tmp_path):
    np.save(tmp_path / 'a.npy', np.ones((2, 3), np.float32))
    np.save(tmp_path / 'b.npy', np.ones((3, 2), np.float32))
    np.save(tmp_path / 'e.npy', np.ones((0, 3), np.float32))
    (tmp_path / 'bad.npy').write_bytes(b'not a numpy file at all')
    raw = (tmp_path / 'a.npy').read_bytes()
    (tmp_path / 'trunc.npy').write_bytes(raw[:-8])

    def run(x, y):
        return compare_pair(dict(file_a=str(tmp_path / x), file_b=str(tmp_path / y)))

    r = run('a.npy', 'b.npy')
    assert 'shape mismatch (2, 3) vs (3, 2)' in r['reason'][0]
    assert 'cosine_similarity' not in r
    assert 'empty tensor' in run('e.npy', 'e.npy')['reason'][0]
    r = run('a.npy', 'bad.npy')
    assert 'bad.npy is not a readable .npy file' in r['reason'][0]
    assert 'truncated' in run('trunc.npy', 'a.npy')['reason'][0]
    assert 'missing' in run('a.npy', 'nope.npy')['reason'][0]


def test_extra_metric_registry(tmp_path):
    seen = {}

    @register_metric('test_max_signed_error', higher_is_better=False)
    def max_signed(a, b):
        seen['dtype'] = a.dtype
        return float(np.max(b - a))

    try:
        a = np.array([1.0, 2.0, np.nan, 4.0])
        b = np.array([1.5, 1.0, 3.0, 4.0])
        np.save(tmp_path / 'a.npy', a)
        np.save(tmp_path / 'b.npy', b)
        got = compare_pair(dict(file_a=str(tmp_path / 'a.npy'), file_b=str(tmp_path / 'b.npy'),
                                extra=['test_max_signed_error']))
        assert got['test_max_signed_error'] == 0.5  # NaN position dropped before the call
        assert seen['dtype'] == np.float64
        with pytest.raises(ValueError, match='built in'):
            register_metric('cosine_similarity')(max_signed)
    finally:
        unregister_metric('test_max_signed_error')


def test_top_errors_and_histogram_match_numpy():
    a = RNG.standard_normal((40, 50))
    b = a + RNG.standard_normal((40, 50)) * 1e-3
    b[7, 9] = a[7, 9] + 5.0
    a[0, 0] = 0.0
    b[3, 3] = np.inf
    rows = top_errors(a, b, n=5, by='abs', chunk=97)
    assert rows[0]['index'] == (3, 3) and rows[0]['error'] == math.inf
    assert rows[1]['index'] == (7, 9)
    err = np.abs(a - b).ravel()
    err[np.isinf(err)] = np.inf
    expected = np.argsort(-err, kind='stable')[:5]
    assert [r['flat_index'] for r in rows] == list(expected)
    rel_rows = top_errors(a, b, n=4, by='rel', chunk=97)
    with np.errstate(divide='ignore'):
        rel = np.abs(a - b) / np.abs(a)
    rel[0, 0] = np.nan  # a == 0: skipped
    rel = np.where(np.isnan(rel), -1, rel).ravel()
    assert [r['flat_index'] for r in rel_rows] == list(np.argsort(-rel, kind='stable')[:4])
    hist = error_histogram(a, b, bins=50, chunk=97)
    assert hist['nonfinite'] == 1
    assert hist['zeros'] + hist['counts'].sum() + hist['nonfinite'] == a.size
    finite = np.abs(a - b)[np.isfinite(b)]
    assert hist['max'] == pytest.approx(finite.max())
    # the CDF at a bin edge equals the fraction of errors at or below it (bins are log-spaced)
    edge = hist['edges'][25]
    below = hist['zeros'] + hist['counts'][:25].sum()
    assert below == pytest.approx(np.sum(finite < edge), abs=2)


def test_fp16_max_constant():
    assert FP16_MAX == float(np.finfo(np.float16).max)


# ----------------------------------------------------------------------------- SQNR, ‰ ratios
def test_sqnr_and_error_ratios_by_hand():
    """Each position worked out by hand; chunk=3 puts the special values across chunks."""
    a = np.array([1.0, 2.0, 0.0, -4.0, 1000.0, 0.0, 3.0, np.nan, 5.0, 10.0])
    b = np.array([1.0005, 2.02, 0.0, -4.0, 1003.0, 1e-6, np.inf, 1.0, 5.0, 10.004])
    # relative errors: 5e-4, 1e-2, 0/0 (exact), 0, 3e-3, b != 0 at a == 0, new inf, (a NaN:
    # no reference), 0, 4e-4 -> over 1e-3: positions 1, 4, 5, 6; over 5e-3: 1, 5, 6; of the
    # 9 positions where a is finite
    for chunk in (3, 1000):
        got = stream_metrics(a, b, chunk=chunk)
        assert got['error_ratio_1e-3'] == pytest.approx(4 / 9)
        assert got['error_ratio_5e-3'] == pytest.approx(3 / 9)
        # SQNR over the 8 positions finite on both sides (6: b inf, 7: a NaN left out)
        signal = 1 + 4 + 0 + 16 + 1000 ** 2 + 0 + 25 + 100
        noise = 0.0005 ** 2 + 0.02 ** 2 + 3.0 ** 2 + 1e-6 ** 2 + 0.004 ** 2
        assert got['sqnr_db'] == pytest.approx(10 * math.log10(signal / noise), rel=1e-9)


def test_sqnr_and_ratios_of_zeros_and_exact_tensors():
    z = np.zeros(100)
    got = stream_metrics(z, z.copy())
    assert got['sqnr_db'] == math.inf  # no noise at all
    assert got['error_ratio_1e-3'] == 0.0 and got['error_ratio_5e-3'] == 0.0
    got = stream_metrics(z, np.full(100, 1e-9))
    assert got['sqnr_db'] == -math.inf  # noise, no signal
    assert got['error_ratio_1e-3'] == 1.0  # any b != 0 where a == 0 exceeds
    a = RNG.standard_normal(1000)
    got = stream_metrics(a, a * 2)  # noise power equals signal power: 0 dB
    assert got['sqnr_db'] == pytest.approx(0.0, abs=1e-12)
    assert got['error_ratio_5e-3'] == 1.0
    got = stream_metrics(np.full(10, np.nan), np.ones(10))
    assert math.isnan(got['sqnr_db']) and math.isnan(got['error_ratio_1e-3'])


def test_sqnr_of_fp16_rounding_matches_theory():
    """Rounding uniform values to fp16 (11 significant bits): noise ~ 6.02 * 11 dB below."""
    a = RNG.uniform(1, 2, 200000)  # one binade: absolute step 2^-10, error uniform +-2^-11
    b = a.astype(np.float16)
    expected = 10 * math.log10(np.mean(a ** 2) / ((2 ** -10) ** 2 / 12))
    assert stream_metrics(a, b)['sqnr_db'] == pytest.approx(expected, abs=0.05)
    assert stream_metrics(a, b)['error_ratio_1e-3'] == 0.0  # half a step < 1e-3 relative


@pytest.mark.parametrize('row,expected', [
    (dict(sqnr_db=70.0, **{'error_ratio_5e-3': 0.0}), 'pass'),
    (dict(sqnr_db=39.9, **{'error_ratio_5e-3': 0.0}), 'warn'),
    (dict(sqnr_db=70.0, **{'error_ratio_5e-3': 0.2}), 'pass'),
    (dict(sqnr_db=70.0, **{'error_ratio_5e-3': 0.6}), 'warn'),
    (dict(sqnr_db=19.9, **{'error_ratio_5e-3': 0.0}), 'error'),
    (dict(sqnr_db=math.inf, **{'error_ratio_5e-3': 0.0}), 'pass'),
    (dict(sqnr_db=-math.inf, **{'error_ratio_5e-3': 1.0}), 'error'),
    (dict(sqnr_db=70.0, nonfinite_new_b=1), 'error'),
    (dict(sqnr_db=70.0, overflow=True), 'error'),
    (dict(sqnr_db=math.nan), 'n/a'),
    (dict(), 'n/a'),
])
def test_grade_thresholds(row, expected):
    assert grade(row) == expected


def test_grade_thresholds_can_be_overridden():
    assert grade(dict(sqnr_db=30.0), dict(warn_sqnr_db=25.0)) == 'pass'
    assert GRADE_THRESHOLDS == dict(error_sqnr_db=20.0, warn_sqnr_db=40.0,
                                    warn_error_ratio_5e_3=0.5)
