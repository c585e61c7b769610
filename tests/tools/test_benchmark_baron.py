"""tools/analysis/benchmark_baron.py smoke-runs on a tiny random CLIP (no timing assertions).

The script's own equivalence check (ours vs the per-sequence 77-token baseline: same loss, same
gradients) is what makes its speed-up figure meaningful, so the test reads the measured
difference back instead of trusting the exit code alone.
"""
import importlib.util
import os.path as osp
import re
import subprocess
import sys

import pytest

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(REPO, 'tools', 'analysis', 'benchmark_baron.py')
TINY = ['--model', 'tiny', '--rois', '4', '--proposals', '8', '--repeats', '1',
        '--seed', '3']


def _run(*extra, timeout=600):
    proc = subprocess.run([sys.executable, TOOL, *TINY, *extra], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def test_tiny_run_reports_ratio_memory_and_passes_check():
    rc, out = _run('--baseline-sequences', 'all', '--print-diff')
    assert rc == 0, out
    assert re.search(r'^ratio \(baseline / ours\): [0-9.]+x$', out, re.M), out
    mem = re.search(r'^peak memory .*: ours ([0-9,]+) MiB, baseline ([0-9,]+) MiB', out, re.M)
    assert mem, out
    assert 'equivalence check: passed on the full batch' in out, out
    diff = re.search(r'^max_rel_diff=(\S+)$', out, re.M)
    assert diff, out
    assert float(diff.group(1)) < 1e-4, out  # fp32, only the attention kernels differ
    assert 'excluded from both timings' in out and 'CLIP image teacher' in out


def test_baseline_subset_is_scaled_and_check_failure_exits_nonzero(capsys):
    # in-process (the subprocess path is covered above; this saves the start-up imports)
    tool = _load_tool()
    assert tool.main([*TINY, '--baseline-sequences', '6', '--no-memory']) == 0
    out = capsys.readouterr().out
    # a subset of the sequences: the baseline time is an estimate and says so
    assert re.search(r'^baseline: .* estimated: measured .* on 6 of \d+ sequences', out, re.M), out
    assert 'equivalence check: passed on the baseline subset of 6 sequences' in out
    assert 'peak memory: not measured (--no-memory)' in out
    # an impossible tolerance must fail the script and show the measured differences
    with pytest.raises(SystemExit) as exc:
        tool.main([*TINY, '--baseline-sequences', '6', '--no-memory', '--check-tol', '1e-30'])
    assert 'equivalence check FAILED' in str(exc.value)
    assert 'max_rel_diff=' in capsys.readouterr().out


def _load_tool():
    spec = importlib.util.spec_from_file_location('benchmark_baron', TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize('argv, message', [
    (['--rois', '0'], '--rois must be >= 1'),
    (['--word-drop', '1.0'], '--word-drop must lie in [0, 1)'),
    (['--baseline-sequences', 'some'], "--baseline-sequences must be 'all' or an int >= 2"),
    (['--baseline-sequences', '1'], "--baseline-sequences must be 'all' or an int >= 2"),
    (['--device', 'tpu'], "--device 'tpu' is not a torch device"),
    (['--device', 'meta'], "--device must be 'cpu' or 'cuda'"),
    (['--warmup', '-1'], '--warmup must be >= 0'),
])
def test_bad_flags_fail_clearly(argv, message, capsys):
    tool = _load_tool()
    with pytest.raises(SystemExit) as exc:
        tool.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_depend_on_device():
    tool = _load_tool()
    args = tool.parse_args([])
    assert (args.baseline_sequences, args.baseline_repeats, args.warmup) == (48, 3, 0)
    args = tool.parse_args(['--baseline-sequences', 'all'])
    assert (args.baseline_sequences, args.baseline_repeats) == ('all', 1)
