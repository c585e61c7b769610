"""plot_curves: per-epoch aggregation of mmengine scalars.json, runs of one work dir merged
(--resume), overlay of work dirs, PNG output."""
import json

import pytest

from ovkit.tools.plot_curves import find_runs, main, read_curves, read_runs


def write_run(work_dir, stamp, train, val, epoch_mean=False, first_epoch=1, step=0):
    """A work dir as mmengine leaves it: <stamp>/vis_data/scalars.json, one JSON per line.

    ``val[i]`` is the validation of epoch ``first_epoch + i`` (fewer entries: the run stopped
    before validating); ``step`` is the iteration count the run starts from.
    """
    d = work_dir / stamp / 'vis_data'
    d.mkdir(parents=True)
    lines = []
    for epoch, losses in enumerate(train, first_epoch):
        seen = []
        for i, loss in enumerate(losses, 1):
            step += 1
            seen.append(loss)
            entry = dict(lr=1e-3, loss=loss, time=.1, epoch=epoch, iter=step, step=step)
            if epoch_mean:
                entry['loss_epoch'] = sum(seen) / len(seen)
            lines.append(entry)
        if epoch - first_epoch < len(val):
            lines.append({'accuracy/top1': val[epoch - first_epoch][1],
                          'val/cross_entropy': val[epoch - first_epoch][0],
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


def test_resumed_runs_are_merged_in_time_order(tmp_path, capsys):
    """Run 1 trains epochs 1-3 and is killed in epoch 3 before validating it; `--resume` from
    epoch_2.pth starts a second run folder at epoch 3. Every epoch appears once; epoch 3 is
    the resumed run's (the full epoch), not the interrupted one's."""
    first = write_run(tmp_path, '20240101_000000', [[3.0, 2.0], [1.6, 1.4], [9.0]],
                      [(2.0, 30.0), (1.5, 50.0)])
    test_only = tmp_path / '20240101_120000' / 'vis_data'  # tools/test.py into the work dir
    test_only.mkdir(parents=True)
    (test_only / 'scalars.json').write_text(json.dumps({'accuracy/top1': 50.0, 'step': 0}))
    second = write_run(tmp_path, '20240102_000000', [[1.2, 1.0], [0.8, 0.6]],
                       [(1.1, 70.0), (0.9, 80.0)], first_epoch=3, step=4)
    assert find_runs(str(tmp_path)) == [str(first), str(second)]
    c = read_runs(find_runs(str(tmp_path)))
    assert c['train_loss'] == {1: pytest.approx(2.5), 2: pytest.approx(1.5),
                               3: pytest.approx(1.1), 4: pytest.approx(0.7)}
    assert c['val_loss'] == {1: 2.0, 2: 1.5, 3: 1.1, 4: 0.9}
    assert c['val_metric'] == {1: 30.0, 2: 50.0, 3: 70.0, 4: 80.0}
    # the CLI plots and prints all four epochs
    main([str(tmp_path), '--out', str(tmp_path / 'c.png')])
    printed = capsys.readouterr().out
    assert '2 runs merged' in printed
    assert '    1   2.5000   2.0000  30.0000' in printed
    assert '    3   1.1000   1.1000  70.0000' in printed
    assert '    4   0.7000   0.9000  80.0000' in printed


def test_latest_run_wins_for_repeated_epochs(tmp_path):
    """Two full runs in one work dir (the second started over): the later values win."""
    write_run(tmp_path, '20240101_000000', [[5.0], [4.0]], [(5.0, 1.0), (4.0, 2.0)])
    write_run(tmp_path, '20240102_000000', [[1.0]], [(1.0, 90.0)])
    c = read_runs(find_runs(str(tmp_path)))
    assert c['val_metric'] == {1: 90.0, 2: 2.0} and c['train_loss'][1] == 1.0


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
