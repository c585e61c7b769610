"""plot_curves: per-epoch aggregation of mmengine scalars.json, overlay of runs, PNG output."""
import json

import pytest

from ovkit.tools.plot_curves import find_scalars, main, read_curves


def write_run(work_dir, stamp, train, val, epoch_mean=False):
    """A work dir as mmengine leaves it: <stamp>/vis_data/scalars.json, one JSON per line."""
    d = work_dir / stamp / 'vis_data'
    d.mkdir(parents=True)
    lines = []
    step = 0
    for epoch, losses in enumerate(train, 1):
        seen = []
        for i, loss in enumerate(losses, 1):
            step += 1
            seen.append(loss)
            entry = dict(lr=1e-3, loss=loss, time=.1, epoch=epoch, iter=step, step=step)
            if epoch_mean:
                entry['loss_epoch'] = sum(seen) / len(seen)
            lines.append(entry)
        if epoch <= len(val):
            lines.append({'accuracy/top1': val[epoch - 1][1],
                          'val/cross_entropy': val[epoch - 1][0],
                          'data_time': .01, 'time': .02, 'step': epoch})
    (d / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    return d / 'scalars.json'


def test_per_epoch_values(tmp_path):
    path = write_run(tmp_path, '20240101_000000', [[2.0, 1.0], [0.9, 0.7, 0.5]],
                     [(1.2, 40.0), (0.8, 75.0)])
    c = read_curves(str(path))
    assert c['train_loss'] == {1: pytest.approx(1.5), 2: pytest.approx(0.7)}
    assert c['val_loss'] == {1: 1.2, 2: 0.8}
    assert c['val_metric'] == {1: 40.0, 2: 75.0}


def test_epoch_running_mean_preferred(tmp_path):
    path = write_run(tmp_path, 's', [[3.0, 1.0, 2.0]], [(1.0, 50.0)], epoch_mean=True)
    assert read_curves(str(path))['train_loss'] == {1: pytest.approx(2.0)}


def test_latest_training_run_is_chosen(tmp_path):
    write_run(tmp_path, '20240101_000000', [[5.0]], [(5.0, 1.0)])
    newest = write_run(tmp_path, '20240102_000000', [[1.0]], [(1.0, 90.0)])
    test_only = tmp_path / '20240103_000000' / 'vis_data'  # a later tools/test.py run
    test_only.mkdir(parents=True)
    (test_only / 'scalars.json').write_text(json.dumps({'accuracy/top1': 90.0, 'step': 0}))
    assert find_scalars(str(tmp_path)) == str(newest)


def test_cli_overlays_runs_into_png(tmp_path, capsys):
    a, b = tmp_path / 'run_a', tmp_path / 'run_b'
    write_run(a, 's', [[2.0], [1.0], [0.5]], [(1.5, 30.0), (1.0, 60.0), (0.7, 80.0)])
    write_run(b, 's', [[2.5], [2.0], [1.8]], [(2.2, 20.0), (2.0, 25.0), (1.9, 30.0)])
    out = tmp_path / 'curves.png'
    runs = main([str(a), str(b), '--out', str(out)])
    assert [r['label'] for r in runs] == ['run_a', 'run_b']
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and out.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert '    3   0.5000   0.7000  80.0000' in printed


def test_missing_logs_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match='LocalVisBackend'):
        main([str(tmp_path)])
