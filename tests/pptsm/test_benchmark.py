"""The speed benchmark runs in --quick mode and both sides compute the same numbers."""
import sys

from tests.conftest import REPO, run_cmd


def test_benchmark_quick_runs_and_checks_equality():
    out = run_cmd([sys.executable, 'tools/analysis/benchmark_pptsm.py', '--quick',
                   '--threads', '1'], cwd=REPO, timeout=600)
    # The script raises on any mismatch; these lines are printed only after its checks pass.
    assert 'shift outputs and gradients equal (folds swapped): checked' in out
    assert 'output shapes equal: (8, 2048, 1, 1) (checked)' in out
    assert 'FLOP-normalised speed' in out and 'fp32 matmul' in out
