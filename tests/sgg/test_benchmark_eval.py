"""The evaluator benchmark runs, and ovkit's core gives SGB's numbers on random cases."""
import re
import sys

from tests.conftest import REPO, run_cmd


def test_benchmark_quick_all_modes_equal_to_sgb():
    # --quick: random images of all three modes incl. images without GT relations or
    # predicted pairs, SGB's [[0, 0]] pair and duplicate GT; the script exits 1 on any
    # difference from its rendering of SGB's per-image evaluator
    out = run_cmd([sys.executable, 'tools/analysis/benchmark_sgg_eval.py', '--quick'], cwd=REPO,
                  timeout=300)
    for mode, n in (('predcls', 21), ('sgcls', 21), ('sgdet', 18)):
        assert re.search(rf'\[{mode}\] .* ratio [\d.]+x', out), out
    assert out.count("numbers equal to SGB's") == 3, out
    assert 'all 21 numbers' in out and 'all 18 numbers' in out
