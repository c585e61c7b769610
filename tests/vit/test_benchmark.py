"""The benchmark runs as a user runs it: every variant (at a tiny width/depth) computes the same
numbers on both sides, eager and compiled, and its full-size layout matches timm's."""
import re
import sys

from ovkit.vit import ARCHS
from tests.conftest import REPO, run_cmd

VARIANTS = ('Ti/16', 'S/16', 'B/16', 'B/32', 'L/16', 'L/32', 'H/14')


def test_benchmark_quick_every_variant():
    out = run_cmd([sys.executable, 'tools/analysis/benchmark_vit.py', '--quick', '--variant',
                   'all'], cwd=REPO)
    blocks = out.split('\nViT-')
    names = [b.split(' ')[0] for b in ('\n' + out).split('\nViT-')[1:]]
    assert names == list(VARIANTS), out  # every arch of the backbone, B and L at both patches
    assert {n.split('/')[0] for n in names} == {'Ti', 'S', 'B', 'L', 'H'} and len(ARCHS) == 5
    for block in blocks:
        logit_diff, grad_diff = map(float, re.search(
            r'same numbers: max\|logits diff\| = (\S+), max\|grad diff\| = (\S+)',
            block).groups())
        assert logit_diff < 1e-5 and grad_diff < 1e-5, block
        assert re.search(r'full-size vit_\w+: \d+ tensors, names and shapes match', block), block
        modes = ['eager']
        if block.startswith('B/16 ') or block.startswith('\nViT-B/16 '):
            # dynamo captured both models; compiled numbers equal eager ones
            compiled = re.search(r'compiled \(eager\) vs eager: (.*)', block).group(1)
            diffs = [float(v) for v in re.findall(r'= (\S+?)[,;]?(?: |$)', compiled)]
            assert len(diffs) == 4 and max(diffs) < 1e-5, compiled
            modes.append('compile')
        else:
            assert 'compile: not run (--quick captures B/16 only)' in block, block
        for mode in modes:
            for side in ('timm', 'ovkit'):
                assert re.search(rf'^{side}\s+{mode}\s+\d', block, re.M), block
            assert re.search(rf'ratio ovkit/timm \({mode}\): \d+\.\d+x', block), block
    assert re.search(r'large matmul: \d+\.\d+ TFLOP/s', out), out
    assert re.search(r'^B/16(\s+\d+\.\d+){6}$', out, re.M), out  # the summary table
    assert re.search(r'^H/14(\s+\d+\.\d+){3}(\s+-){3}$', out, re.M), out
