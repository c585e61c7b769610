"""tools/analysis/benchmark_accuracy.py --quick runs as a user would: both implementations
agree (the script exits 1 otherwise) and the attribution cost line is printed."""
import os
import re
import sys

import pytest

from tests.conftest import REPO, run_cmd


@pytest.mark.e2e
def test_benchmark_quick():
    out = run_cmd([sys.executable, os.path.join(REPO, 'tools', 'analysis',
                                                'benchmark_accuracy.py'), '--quick'], cwd=REPO)
    worst = float(re.search(r'largest relative disagreement .*: (\S+)', out).group(1))
    assert worst < 1e-6
    line = next(ln for ln in out.splitlines() if ln.startswith('attribution'))
    assert '0 not isolated' in line and re.search(r'adds -?[\d.]+ forward passes', line)
