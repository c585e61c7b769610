"""VCTree, Transformer and Causal TDE through the real tools on shapes scene graphs: 2-process
training, tools/test.py with the effect switch, resume with the moving averages, and
tools/sgg_infer.py on a folder with a corrupt image. Short runs: the numbers that show the
methods learning are measured separately (docs/sgg.md)."""
import json
import os.path as osp
import shutil
import sys

import pytest
import torch

from ovkit.sgg.tde_effect import read_test_metrics
from ovkit.shapes import SHAPE_PREDICATES
from tests.conftest import REPO, run_cmd

pytestmark = pytest.mark.e2e
CFG = osp.join(REPO, 'configs', 'sgg')
CAUSAL = osp.join(CFG, 'causal-motifs-sum-tde_r18-fpn-tiny_predcls_shapes-vg150.py')
VCTREE = osp.join(CFG, 'vctree_r18-fpn-tiny_predcls_shapes-vg150.py')
TRANSFORMER_SGDET = osp.join(CFG, 'transformer_r18-fpn-tiny_sgdet_shapes-vg150.py')
AVERAGES = ('relation_head.predictor.untreated_spt',
            'relation_head.predictor.context_layer.untreated_edg_feat')


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    from ovkit.shapes import make_shapes
    ws = tmp_path_factory.mktemp('sgg2_ws')
    make_shapes(str(ws / 'data' / 'shapes'), seed=0, kinds=['vg150'])
    return ws


def dist_train(ws, cfg, name, iters, val=False, extra=()):
    work = ws / 'work_dirs' / name
    out = run_cmd(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), cfg, '2',
                   '--work-dir', str(work), '--cfg-options', f'train_cfg.max_iters={iters}',
                   f'train_cfg.val_interval={iters if val else 10 ** 6}',
                   f'default_hooks.checkpoint.interval={iters}',
                   'default_hooks.logger.interval=4', 'log_processor.window_size=4', *extra],
                  cwd=ws)
    assert 'distributed run: world size 2, backend gloo' in out
    return work, out


def logged(work):
    rows = []
    for path in sorted(work.glob('*/vis_data/scalars.json')):
        rows += [json.loads(line) for line in open(path) if line.strip()]
    return [r for r in rows if 'loss' in r]


def metrics(out):
    """sgg/* numbers printed by the last evaluation in a tool's output."""
    line = [x for x in out.splitlines() if 'sgg/R@20' in x][-1]
    items = line[line.index('sgg/R@20'):].split()
    return {k.rstrip(':'): float(v) for k, v in zip(items[::2], items[1::2])}


@pytest.fixture(scope='module')
def causal(ws):
    return dist_train(ws, CAUSAL, 'causal', 16, val=True)


def test_causal_trains_two_processes_with_aux_losses_and_averages(causal):
    work, out = causal
    rows = logged(work)
    assert rows and rows[-1]['iter'] == 16
    for key in ('loss_rel', 'loss_aux_ctx', 'loss_aux_vis', 'loss_aux_frq'):
        assert all(key in r for r in rows), key
    # validation while training runs the factual output (CausalEffectHook), as SGB
    assert 'sgg/mR@50' in out
    state = torch.load(str(work / 'iter_16.pth'), map_location='cpu')['state_dict']
    for key in AVERAGES:
        assert state[key].abs().sum() > 0, key


def test_test_py_with_each_effect_type_prints_recalls(causal, ws):
    work, _ = causal
    results = {}
    for effect in ('TDE', 'none'):       # TDE is the config's own; none via the switch
        cmd = [sys.executable, osp.join(REPO, 'tools', 'test.py'), CAUSAL,
               str(work / 'iter_16.pth'), '--work-dir', str(work / f'test_{effect}')]
        if effect != 'TDE':
            cmd += ['--cfg-options', f'model.relation_head.predictor.effect_type={effect}']
        out = run_cmd(cmd, cwd=ws)
        for k in (20, 50, 100):
            assert f'sgg/R@{k}:' in out and f'sgg/mR@{k}:' in out, out[-3000:]
        results[effect] = metrics(out)
        # what tools/analysis/sgg_tde_effect.py reads back from the run's files
        saved, per_predicate = read_test_metrics(str(work / f'test_{effect}'))
        for key in ('sgg/R@50', 'sgg/mR@50'):
            assert saved[key] == pytest.approx(results[effect][key], abs=1e-4)
        assert set(per_predicate) == set(SHAPE_PREDICATES)
    assert results['TDE'] != results['none']


def test_resume_keeps_the_moving_averages(causal, ws):
    work, _ = causal
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'train.py'), CAUSAL,
                   '--work-dir', str(work), '--resume', '--cfg-options',
                   'train_cfg.max_iters=20', 'train_cfg.val_interval=1000',
                   'default_hooks.checkpoint.interval=4'], cwd=ws)
    assert 'resumed epoch: 0, iter: 16' in out
    before = torch.load(str(work / 'iter_16.pth'), map_location='cpu')['state_dict']
    after = torch.load(str(work / 'iter_20.pth'), map_location='cpu')['state_dict']
    for key in AVERAGES:
        # 4 more updates at ratio 0.02 keep ~92 % of the resumed average; a restart from zero
        # would reach about a third of it
        b, a = before[key], after[key]
        assert not torch.equal(a, b)
        assert torch.dot(a, b) / b.norm() ** 2 > 0.8, key


def test_vctree_trains_two_processes_with_its_tree_loss(ws):
    work, _ = dist_train(ws, VCTREE, 'vctree', 12)
    rows = logged(work)
    assert rows and rows[-1]['iter'] == 12
    assert all(torch.isfinite(torch.tensor(r['loss_vctree_binary'])) for r in rows)
    assert (work / 'iter_12.pth').exists()


def test_transformer_sgdet_trains_and_sgg_infer_reads_a_folder(ws):
    work, _ = dist_train(ws, TRANSFORMER_SGDET, 'transformer_sgdet', 8,
                         extra=('model.detector_checkpoint=None', ))
    images = ws / 'my_images'
    images.mkdir()
    src = sorted((ws / 'data' / 'shapes' / 'vg150' / 'VG_100K').glob('*.jpg'))[:3]
    for p in src:
        shutil.copy(p, images / p.name)
    (images / 'zz_corrupt.jpg').write_bytes(b'\xff\xd8\xff\xe0 truncated')
    out_dir = ws / 'sgg_out'
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'sgg_infer.py'), TRANSFORMER_SGDET,
                   str(work / 'iter_8.pth'), str(images), '--out', str(out_dir),
                   '--box-topk', '6', '--rel-topk', '5', '--device', 'cpu'], cwd=ws)
    assert 'skipped: ' in out and 'zz_corrupt.jpg' in out
    info = json.loads((out_dir / 'custom_data_info.json').read_text())
    pred = json.loads((out_dir / 'custom_prediction.json').read_text())
    assert set(info) == {'idx_to_files', 'ind_to_classes', 'ind_to_predicates'}
    assert [osp.basename(f) for f in info['idx_to_files']] == [p.name for p in src]
    assert info['ind_to_classes'][0] == info['ind_to_predicates'][0] == '__background__'
    assert len(info['ind_to_predicates']) == 9
    assert sorted(pred) == ['0', '1', '2']
    for entry in pred.values():
        assert set(entry) == {'bbox', 'bbox_labels', 'bbox_scores', 'rel_pairs', 'rel_labels',
                              'rel_scores', 'rel_all_scores'}
        assert all(len(s) == 9 for s in entry['rel_all_scores'])
    skipped = json.loads((out_dir / 'skipped_images.json').read_text())
    assert [osp.basename(s['file']) for s in skipped] == ['zz_corrupt.jpg']
    assert len(list(out_dir.glob('*.png'))) == 3
