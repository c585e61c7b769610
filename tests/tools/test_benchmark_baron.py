"""tools/analysis/benchmark_baron.py imported as a module: --quick runs both sides (ovkit's
shipped BARON step and the rendering of the reference's code path) and they compute the same
numbers. No timing assertions.

The script's own equivalence check is what makes its ratio meaningful, so the test reads the
returned losses and the measured difference back instead of trusting that it returned.
"""
import math

import pytest
import torch

from tools.analysis.benchmark_baron import main


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)  # main(--threads 1) sets it for the whole process


def test_quick_run_times_both_sides_and_they_agree(one_thread, capsys):
    res = main(['--quick', '--print-diff', '--threads', '1'])
    out = capsys.readouterr().out
    assert 'equivalence check: passed' in out
    assert 'ratio (reference / ovkit):' in out
    assert set(res['times']) == {'ovkit', 'reference'}
    assert all(t > 0 for t in res['times'].values())
    # all three losses really computed on both sides, and equal (fp32; attention kernels and
    # summation order differ)
    assert set(res['losses']) == set(res['losses_reference']) == {
        'loss_cls', 'loss_bag', 'loss_single'}
    for key, ours in res['losses'].items():
        ref = res['losses_reference'][key]
        assert ours > 0 and math.isclose(ours, ref, rel_tol=1e-3), (key, ours, ref)
    assert res['max_rel_diff'] < 1e-3
    assert res['num_bag_sentences'] > 0  # the whole KD step ran: bags were sampled


def test_an_impossible_tolerance_fails_with_the_differences(one_thread, capsys):
    with pytest.raises(SystemExit, match='equivalence check FAILED'):
        main(['--quick', '--threads', '1', '--check-tol', '1e-30'])
    assert 'check loss_bag: max abs diff' in capsys.readouterr().out


@pytest.mark.parametrize('argv, message', [
    (['--rois', '0'], '--rois must be >= 1'),
    (['--device', 'tpu'], "--device 'tpu' is not a torch device"),
    (['--warmup', '-1'], '--warmup must be >= 0'),
])
def test_bad_flags_fail_clearly(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_gradients_are_compared_in_l2_norm():
    """Rounding that moves a single element (a pixel under a RoI edge) passes the default
    tolerance; a gradient that is wrong everywhere by 1% does not."""
    from tools.analysis.benchmark_baron import compare
    g = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    one_pixel = g.clone()
    one_pixel[int(g.abs().argmax())] *= 1 + 3e-3  # 3e-3 of the largest element
    result = lambda grad: (0.0, dict(loss=1.0), dict(x=grad))  # noqa: E731
    err, rel = compare(result(one_pixel), result(g))['grad x']
    assert err == pytest.approx(3e-3 * float(g.abs().max()), rel=1e-3)
    assert rel == pytest.approx(err / float(g.norm()), rel=1e-3) and rel < 2e-3
    _, rel = compare(result(g * 1.01), result(g))['grad x']
    assert rel == pytest.approx(0.01, rel=1e-4)
    assert compare(result(torch.zeros(0)), result(torch.zeros(0)))['grad x'] == (0.0, 0.0)
