"""The benchmark runs as a user runs it and both sides compute the same numbers."""
import re
import sys

from tests.conftest import REPO, run_cmd


def test_benchmark_quick():
    out = run_cmd([sys.executable, 'tools/analysis/benchmark_vit.py', '--quick'], cwd=REPO)
    logit_diff, grad_diff = map(float, re.search(
        r'max\|logits diff\| = (\S+), max\|grad diff\| = (\S+)', out).groups())
    assert logit_diff < 1e-5 and grad_diff < 1e-5, out
    for side in ('timm', 'ovkit'):
        assert re.search(rf'^{side}\s+eager\s+\d', out, re.M), out
    assert re.search(r'ratio ovkit/timm \(eager\): \d+\.\d+x', out), out
    assert re.search(r'large matmul: \d+\.\d+ TFLOP/s', out), out
