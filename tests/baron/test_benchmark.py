"""tools/analysis/benchmark_baron.py --quick, run as a user runs it (no timing assertions).

The script's own equivalence check (ovkit vs the reference's code path: same three losses, same
gradients) is what makes its ratio meaningful, so the test reads the measured difference back
instead of trusting the exit code alone.
"""
import os.path as osp
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

TOOL = osp.join(REPO, 'tools', 'analysis', 'benchmark_baron.py')


def _run(*args, timeout=900):
    proc = subprocess.run([sys.executable, TOOL, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def test_quick_run_times_both_sides_and_passes_the_check():
    rc, out = _run('--quick', '--print-diff', '--threads', '1')
    assert rc == 0, out[-4000:]
    assert re.search(r'^ratio \(reference / ovkit\): [0-9.]+x$', out, re.M), out
    assert re.search(r'^ovkit: +[0-9.,]+ m?s per step', out, re.M), out
    assert re.search(r'^reference: +[0-9.,]+ m?s per step', out, re.M), out
    assert 'equivalence check: passed' in out
    diff = float(re.search(r'^max_rel_diff=(\S+)$', out, re.M).group(1))
    assert diff < 1e-3, out  # fp32; attention kernels and summation order differ
    losses = re.search(r'^losses: loss_cls ovkit (\S+) / reference (\S+), loss_bag ovkit (\S+) '
                       r'/ reference (\S+), loss_single ovkit (\S+) / reference (\S+)$', out, re.M)
    assert losses, out
    values = [float(v.rstrip(',')) for v in losses.groups()]
    assert all(v > 0 for v in values)  # all three losses really computed on both sides
    # the whole KD step: bags were sampled and both sides got the same number of sentences
    assert re.search(r'-> \d+ bag centres, [1-9]\d* bags, [1-9]\d* bag sentences', out), out


def test_an_impossible_tolerance_fails_with_the_differences():
    rc, out = _run('--quick', '--threads', '1', '--check-tol', '1e-30')
    assert rc != 0 and 'equivalence check FAILED' in out, out[-3000:]
    assert 'check loss_bag: max abs diff' in out


@pytest.mark.parametrize('argv, message', [
    (['--rois', '0'], '--rois must be >= 1'),
    (['--device', 'tpu'], "--device 'tpu' is not a torch device"),
    (['--warmup', '-1'], '--warmup must be >= 0'),
])
def test_bad_flags_fail_clearly(argv, message):
    rc, out = _run(*argv, timeout=300)
    assert rc == 2 and message in out, out
