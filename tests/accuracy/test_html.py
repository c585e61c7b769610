"""report.html: self-contained (nothing fetched at view time), the data complete, and the page
built without a script error in a real browser (headless Chromium from Debian's packages;
tools/install/install_chromium.sh installs it for CI)."""
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

from ovkit.accuracy.compare import compare_dumps
from ovkit.accuracy.dump import dump_module
from ovkit.accuracy.manifest import save_arrays
from ovkit.accuracy.report import write_report

from .test_attribution import chain

CHROMIUM = next((shutil.which(b) for b in ('chromium', 'chromium-browser', 'google-chrome')
                 if shutil.which(b)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason='Chromium is not installed: run tools/install/install_chromium.sh '
    '(apt-get install chromium) to test report.html in a browser')


@pytest.fixture(scope='module')
def report(tmp_path_factory):
    """fp32 vs fp16 of a small chain with attribution, plus a dump pair with awkward rows
    (a name holding '</script>', NaN / inf, a tensor on one side only)."""
    root = tmp_path_factory.mktemp('html')
    x = torch.randn(16, 32, generator=torch.Generator().manual_seed(1))
    model = chain()
    ref = dump_module(model, x, str(root / 'fp32'), 'fp32', dump_inputs=True)
    dump_module(model, x, str(root / 'fp16'), 'fp16', isolate_from=ref)
    res = compare_dumps(ref.root, str(root / 'fp16'), workers=1)
    paths = write_report(res, str(root / 'report'), quiet=True, plots=False)
    rng = np.random.default_rng(0)
    a = {'__input__': rng.standard_normal(50), 'evil</script><b>x': rng.standard_normal(50),
         'nan': np.array([np.nan, 1.0, 2.0]), 'only_a': np.ones(3), '__output__': np.ones(4)}
    b = dict(a, nan=np.array([np.nan, np.inf, 2.0]), __output__=np.zeros(4))
    del b['only_a']
    save_arrays(root / 'a', a, setting='fp32')
    save_arrays(root / 'b', b, setting='fp16')
    odd = compare_dumps(str(root / 'a'), str(root / 'b'), workers=1)
    odd_paths = write_report(odd, str(root / 'odd'), quiet=True, plots=False)
    return dict(result=res, html=paths['html'], odd=odd, odd_html=odd_paths['html'])


def page_data(path):
    text = open(path, encoding='utf-8').read()
    m = re.search(r'<script type="application/json" id="ovkit-data">(.*?)</script>', text,
                  re.S)
    return text, json.loads(m.group(1))


def test_self_contained_and_complete(report):
    for key, res in (('html', report['result']), ('odd_html', report['odd'])):
        text, data = page_data(report[key])
        assert not re.search(r'https?://(?!www\.w3\.org/2000/svg)', text), 'a network URL'
        assert '<script src' not in text and '<link' not in text and '@import' not in text
        assert len(data['rows']) == len(res.rows)
        assert [r['label'] for r in data['rows']] == [
            f'{r["name"]}[{r["index"]}]' if not r['call'] else r['label']
            for r in res.rows]  # same order as the CSV
    _, data = page_data(report['odd_html'])
    nan_row = next(r for r in data['rows'] if r['label'] == 'nan[0]')
    assert nan_row['grade'] == 'error'  # an inf where A is finite
    assert data['rows'][1]['label'] == 'evil</script><b>x[0]'  # escaped in the page, intact
    _, data = page_data(report['html'])
    assert data['isolated'] and data['attribution']
    assert {a['label'] for a in data['attribution']} == {'fc0[0]', 'fc1[0]', 'fc2[0]',
                                                         'fc3[0]', 'head[0]'}
    assert data['cdfs'] and all(c['x'] for c in data['cdfs'].values())
    assert any(f['rule'] == 'error_sources' for f in data['findings'])


class _Rows(HTMLParser):
    """Counts the table body rows and the scatter points of a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.rows = self.points = self.bars = 0
        self.in_body = False
        self.root = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == 'html':
            self.root = attrs
        if tag == 'tbody':
            self.in_body = True
        elif tag == 'tr' and self.in_body:
            self.rows += 1
        elif tag == 'circle' and attrs.get('class') == 'pt':
            self.points += 1
        elif tag == 'g' and attrs.get('class') == 'bar':
            self.bars += 1

    def handle_endtag(self, tag):
        if tag == 'tbody':
            self.in_body = False


def chromium(args, tmp_path):
    cmd = [CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
           f'--user-data-dir={tmp_path / "profile"}', '--enable-logging=stderr', '--v=0',
           *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@needs_chromium
@pytest.mark.parametrize('key', ['html', 'odd_html'])
def test_page_in_headless_chromium(report, key, tmp_path):
    res = report['result' if key == 'html' else 'odd']
    url = 'file://' + os.path.abspath(report[key])
    proc = chromium(['--dump-dom', url], tmp_path)
    dom = proc.stdout
    parser = _Rows()
    parser.feed(dom)
    assert parser.root.get('data-ready') == '1', proc.stderr[-3000:]
    assert 'data-errors' not in parser.root, parser.root.get('data-errors')
    assert 'Uncaught' not in proc.stderr, proc.stderr[-3000:]
    assert parser.rows == len(res.rows)  # one table row per tensor
    finite = [r for r in res.rows if r['op_index'] is not None and isinstance(
        r['cosine_similarity'], float) and np.isfinite(r['cosine_similarity'])]
    assert parser.points == len(finite)
    if key == 'html':
        assert parser.bars == 5  # the five Linear layers have an own error
    png = tmp_path / 'page.png'
    proc = chromium(['--hide-scrollbars', '--window-size=1400,2600', f'--screenshot={png}',
                     url], tmp_path)
    assert png.exists(), proc.stderr[-3000:]
    data = png.read_bytes()
    assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 20000
    assert 'Uncaught' not in proc.stderr
