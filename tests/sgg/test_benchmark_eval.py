"""The evaluator benchmark runs, and ovkit's core gives SGB's numbers on random cases."""
import re
import sys

from tests.conftest import REPO, run_cmd


def test_benchmark_quick_all_modes_equal_to_sgb():
    # --quick: 20 random images per mode cycling through the cases SGB treats specially
    # (no GT relation, no predicted pair, SGB's [[0, 0]] pair, duplicate GT) and
    # frequency-predictor scores (ties in the ng ranking); the script exits 1 if any number
    # differs in any bit from its rendering of SGB's per-image evaluator
    out = run_cmd([sys.executable, 'tools/analysis/benchmark_sgg_eval.py', '--quick'], cwd=REPO,
                  timeout=300)
    for mode in ('predcls', 'sgcls', 'sgdet'):
        assert re.search(rf'\[{mode}\] 20 images .* ratio [\d.]+x', out), out
    assert out.count("numbers equal to SGB's") == 3, out
    assert out.count("all 21 numbers") == 2 and 'all 18 numbers' in out, out
