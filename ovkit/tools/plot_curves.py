"""Train loss and val loss/accuracy per epoch from mmengine run logs, drawn into one PNG.

``python tools/analysis/plot_curves.py WORK_DIR [WORK_DIR...] [--out curves.png]``

Reads ``WORK_DIR/<timestamp>/vis_data/scalars.json`` (mmengine's LocalVisBackend, on in the
OpenMMLab default runtimes) of every run in the work dir that trained, oldest first, and merges
them: a run continued with ``--resume`` logs into a new timestamp folder from the epoch it
resumed at, so the earlier epochs come from the earlier runs; an epoch logged by several runs
takes the latest run's values (an interrupted epoch is redone after resuming). Per epoch:

- train loss: the epoch's mean loss, from ``loss_epoch`` when the config logs it
  (``log_processor.custom_cfg`` with ``window_size='epoch'``, as ovkit's configs do), else the
  mean of the logged ``loss`` values of that epoch (each a mean over the logging window);
- val loss: ``val/cross_entropy`` (ovkit's ``OVKitValLoss`` metric; mmpretrain logs no val
  loss by itself), or any ``val/loss`` a config logs;
- val accuracy: ``accuracy/top1`` (or ``--metric``).

Several work dirs are overlaid, one colour per run.
"""
import argparse
import glob
import json
import os.path as osp
from collections import defaultdict
from typing import Dict, List


def find_runs(work_dir: str) -> List[str]:
    """The scalars.json of every run in ``work_dir`` that has training entries, oldest first.

    mmengine names each run's folder by its start time (``%Y%m%d_%H%M%S``), so the names sort
    in time order. Runs without training entries (``tools/test.py`` into the same work dir)
    are left out.

    Args:
        work_dir: a run's ``--work-dir`` (or one scalars.json file).
    """
    if osp.isfile(work_dir):
        return [work_dir]
    runs = []
    for path in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))):
        with open(path) as f:
            if any('"epoch"' in line for line in f):
                runs.append(path)
    if not runs:
        raise FileNotFoundError(
            f'no training log in {work_dir!r}: expected <timestamp>/vis_data/scalars.json with '
            "train entries (the config's visualizer needs vis_backends=[dict(type="
            "'LocalVisBackend')], as in the OpenMMLab default runtimes)")
    return runs


def read_runs(paths: List[str], metric: str = 'accuracy/top1') -> Dict[str, Dict[int, float]]:
    """Per-epoch curves of several runs of one work dir merged in order (later runs win).

    Args:
        paths: scalars.json files, oldest first (:func:`find_runs`).
        metric: validation metric key for the accuracy panel.
    """
    merged = dict(train_loss={}, val_loss={}, val_metric={})
    for path in paths:
        for key, values in read_curves(path, metric).items():
            merged[key].update(values)
    return {k: dict(sorted(v.items())) for k, v in merged.items()}


def read_curves(path: str, metric: str = 'accuracy/top1') -> Dict[str, Dict[int, float]]:
    """Per-epoch ``train_loss``, ``val_loss``, ``val_metric`` from one scalars.json.

    Args:
        path: scalars.json file.
        metric: validation metric key for the accuracy panel.
    """
    train, train_epoch_mean = defaultdict(list), {}
    val_loss, val_metric = {}, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            entry = json.loads(line)
            if 'epoch' in entry and 'iter' in entry:  # a training log line
                if 'loss' in entry:
                    train[entry['epoch']].append(entry['loss'])
                if 'loss_epoch' in entry:  # running mean over the epoch: the last one is exact
                    train_epoch_mean[entry['epoch']] = entry['loss_epoch']
            else:  # validation: logged once per epoch, step = epoch
                epoch = entry.get('step')
                for key in ('val/cross_entropy', 'val/loss'):
                    if key in entry:
                        val_loss[epoch] = entry[key]
                        break
                if metric in entry:
                    val_metric[epoch] = entry[metric]
    train_loss = {e: train_epoch_mean.get(e, sum(v) / len(v)) for e, v in train.items()}
    return dict(train_loss=train_loss, val_loss=val_loss, val_metric=val_metric)


def plot(runs: Dict[str, dict], out: str, metric: str = 'accuracy/top1') -> str:
    """Draw loss (train solid, val dashed) and the val metric of every run.

    Args:
        runs: label -> curves from :func:`read_curves`.
        out: PNG path.
        metric: metric name for the axis label.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    colours = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for i, (label, c) in enumerate(runs.items()):
        colour = colours[i % len(colours)]
        for key, style, what in (('train_loss', '-', 'train'), ('val_loss', '--', 'val')):
            if c[key]:
                xs = sorted(c[key])
                ax_loss.plot(xs, [c[key][x] for x in xs], style, color=colour, marker='o',
                             markersize=3, label=f'{label} {what}')
        if c['val_metric']:
            xs = sorted(c['val_metric'])
            ax_acc.plot(xs, [c['val_metric'][x] for x in xs], color=colour, marker='o',
                        markersize=3, label=label)
    ax_loss.set(xlabel='epoch', ylabel='loss', title='loss (train solid, val dashed)')
    ax_acc.set(xlabel='epoch', ylabel=metric, title=f'val {metric}')
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv=None) -> List[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+', metavar='WORK_DIR',
                        help="a run's work dir (or its scalars.json)")
    parser.add_argument('--out', default=None, help='PNG path (default WORK_DIR/curves.png)')
    parser.add_argument('--labels', nargs='+', default=None, help='legend names of the runs')
    parser.add_argument('--metric', default='accuracy/top1')
    args = parser.parse_args(argv)
    labels = args.labels or [osp.basename(osp.normpath(d)) for d in args.work_dirs]
    if len(labels) != len(args.work_dirs):
        parser.error('--labels needs one name per WORK_DIR')
    runs = {}
    for label, work_dir in zip(labels, args.work_dirs):
        paths = find_runs(work_dir)
        curves = read_runs(paths, args.metric)
        runs[label] = curves
        merged = f' ({len(paths)} runs merged, e.g. after --resume)' if len(paths) > 1 else ''
        print(f'{label}{merged}: epoch, train loss, val loss, val {args.metric}')
        epochs = sorted(set(curves['train_loss']) | set(curves['val_metric']))
        for e in epochs:
            vals = [curves[k].get(e) for k in ('train_loss', 'val_loss', 'val_metric')]
            print(f'  {e:3d} ' + ' '.join('       -' if v is None else f'{v:8.4f}' for v in vals))
    out = args.out or osp.join(args.work_dirs[0] if osp.isdir(args.work_dirs[0]) else '.',
                               'curves.png')
    plot(runs, out, args.metric)
    print(f'wrote {out}')
    return [dict(label=k, **v) for k, v in runs.items()]


if __name__ == '__main__':
    main()
