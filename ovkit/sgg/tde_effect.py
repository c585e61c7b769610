"""Measure what Causal TDE exists for: mean recall of the same checkpoint with and without the
total direct effect, on shapes scene graphs with a long-tailed predicate distribution.

    python tools/analysis/sgg_tde_effect.py [--seeds 0 1 2] [--nproc 2] [--out DIR]

1. writes the VG150-format shapes set with ``predicate_mix='longtail'`` (deterministic);
2. for each seed trains the tiny Causal-Motifs-sum PredCls config with the shipped launcher
   (``tools/dist_train.sh CONFIG NPROC``, ``randomness.seed=SEED``);
3. tests that one final checkpoint twice with ``tools/test.py``: ``effect_type=none`` (the
   factual, biased output) and ``effect_type=TDE``;
4. prints R@50 / mR@50 (and R@100 / mR@100) per seed, and writes them to ``OUT/results.json``.

Run it from the repository root (the config and the launchers are read from there). In PredCls
NIE is zero and TE equals TDE (the labels are ground truth), so only none and TDE are tested.
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time

CONFIG = 'configs/sgg/causal-motifs-sum-tde_r18-fpn-tiny_predcls_shapes-vg150.py'
KEYS = ('sgg/R@50', 'sgg/mR@50', 'sgg/R@100', 'sgg/mR@100')
EFFECTS = ('none', 'TDE')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=CONFIG, help='a Causal PredCls shapes config')
    parser.add_argument('--out', default='work_dirs/sgg_tde_effect',
                        help='data, work dirs and results.json go here')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2],
                        help='training seeds (randomness.seed)')
    parser.add_argument('--nproc', type=int, default=2, help='training processes')
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config\'s)')
    parser.add_argument('--num-train', type=int, default=400,
                        help='shapes images of the h5 train split (train + val)')
    parser.add_argument('--num-test', type=int, default=200, help='shapes test images')
    parser.add_argument('--data-seed', type=int, default=0, help='shapes generator seed')
    parser.add_argument('--quick', action='store_true',
                        help='small data, one seed, 8 iterations, one process: checks that the '
                        'pipeline runs (numbers meaningless)')
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.nproc, args.iters = args.seeds[:1], 1, 8
        args.num_train, args.num_test = 40, 16
    return args


def run(cmd, log_path, env):
    """Run one tool; its output goes to ``log_path``; a failure names the log."""
    with open(log_path, 'w') as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f'command failed ({proc.returncode}): {" ".join(cmd)}\n'
                           f'log: {log_path}\n{tail}')


def data_options(data_root):
    """--cfg-options that point every split and the metric at ``data_root``."""
    opts = [f'{loader}.dataset.data_root={data_root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    zs = osp.join(data_root, 'zeroshot_triplet.npy')
    return opts + [f'{evaluator}.zeroshot_triplets={zs}'
                   for evaluator in ('val_evaluator', 'test_evaluator')]


def read_test_metrics(work_dir):
    """The metrics of one ``tools/test.py`` run in ``work_dir``: mmengine's LoggerHook dumps
    them to ``<timestamp>/<timestamp>.json``; SGGMetric's own ``sgg_*.json`` beside it has the
    per-predicate recalls (``per_predicate``, empty if absent)."""
    paths = [p for p in sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
             if osp.basename(p) == osp.basename(osp.dirname(p)) + '.json']
    if not paths:
        raise RuntimeError(f'no test metrics json under {work_dir}')
    with open(paths[-1]) as f:
        metrics = json.load(f)
    per_predicate = {}
    for path in glob.glob(osp.join(osp.dirname(paths[-1]), 'sgg_*.json')):
        with open(path) as f:
            per_predicate = json.load(f).get('per_predicate', {})
    return metrics, per_predicate


def measure(args):
    """Train each seed and test its checkpoint with each effect; returns {seed: {effect: m}}."""
    from ovkit.shapes import make_shapes
    for path in (args.config, osp.join('tools', 'dist_train.sh'), osp.join('tools', 'test.py')):
        if not osp.isfile(path):
            raise SystemExit(f'error: {path} not found: run sgg_tde_effect.py from the repository '
                             f'root (it launches tools/dist_train.sh and tools/test.py), or pass '
                             f'--config')
    out = osp.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    make_shapes(osp.join(out, 'data'), seed=args.data_seed, kinds=['vg150'],
                options=dict(vg150=dict(num_train=args.num_train, num_test=args.num_test,
                                        predicate_mix='longtail')))
    data_root = osp.join(out, 'data', 'vg150') + '/'
    env = dict(os.environ, PYTHON=os.environ.get('PYTHON', sys.executable))
    results = {}
    for seed in args.seeds:
        work = osp.join(out, f'seed{seed}')
        opts = data_options(data_root) + [f'randomness.seed={seed}']
        train_opts = list(opts)
        if args.iters is not None:
            train_opts += [f'train_cfg.max_iters={args.iters}',
                           f'train_cfg.val_interval={args.iters}',
                           f'default_hooks.checkpoint.interval={args.iters}',
                           # the schedule's step stays at three quarters of the run
                           f'param_scheduler.1.end={args.iters}',
                           f'param_scheduler.1.milestones=[{int(args.iters * 0.75)}]']
        t0 = time.time()
        run(['bash', osp.join('tools', 'dist_train.sh'), args.config, str(args.nproc),
             '--work-dir', work, '--cfg-options', *train_opts],
            osp.join(out, f'seed{seed}_train.log'), env)
        with open(osp.join(work, 'last_checkpoint')) as f:
            ckpt = f.read().strip()
        results[seed] = {}
        for effect in EFFECTS:
            test_dir = osp.join(work, f'test_{effect}')
            run([sys.executable, osp.join('tools', 'test.py'), args.config, ckpt,
                 '--work-dir', test_dir, '--cfg-options', *opts,
                 f'model.relation_head.predictor.effect_type={effect}'],
                osp.join(out, f'seed{seed}_test_{effect}.log'), env)
            metrics, per_predicate = read_test_metrics(test_dir)
            results[seed][effect] = {k: float(metrics[k]) for k in KEYS}
            results[seed][effect]['per_predicate_mR@50'] = {
                name: float(v['mR@50']) for name, v in per_predicate.items()}
        print(f'seed {seed}: trained and tested in {time.time() - t0:.0f}s ({ckpt})',
              flush=True)
    return results


def table(results):
    """Markdown table: per seed R@50 / mR@50 (and @100) for none vs TDE, then the mean."""
    rows = ['| seed | R@50 none | R@50 TDE | mR@50 none | mR@50 TDE | mR@50 TDE - none '
            '| mR@100 none | mR@100 TDE |',
            '| --- | --- | --- | --- | --- | --- | --- | --- |']

    def row(name, m):
        return (f'| {name} | {m["none"]["sgg/R@50"]:.3f} | {m["TDE"]["sgg/R@50"]:.3f} '
                f'| {m["none"]["sgg/mR@50"]:.3f} | {m["TDE"]["sgg/mR@50"]:.3f} '
                f'| {m["TDE"]["sgg/mR@50"] - m["none"]["sgg/mR@50"]:+.3f} '
                f'| {m["none"]["sgg/mR@100"]:.3f} | {m["TDE"]["sgg/mR@100"]:.3f} |')

    for seed, m in results.items():
        rows.append(row(str(seed), m))
    if len(results) > 1:
        mean = {e: {k: sum(m[e][k] for m in results.values()) / len(results) for k in KEYS}
                for e in EFFECTS}
        rows.append(row('mean', mean))
    return '\n'.join(rows)


def predicate_table(results):
    """Markdown table: each predicate's recall@50 (mean over seeds), none vs TDE."""
    first = next(iter(results.values()))
    names = list(first['none'].get('per_predicate_mR@50', {}))
    if not names:
        return ''
    rows = ['| predicate | R@50 none | R@50 TDE |', '| --- | --- | --- |']
    for name in names:
        none, tde = (sum(m[e]['per_predicate_mR@50'][name] for m in results.values())
                     / len(results) for e in EFFECTS)
        rows.append(f'| {name} | {none:.3f} | {tde:.3f} |')
    return '\n'.join(rows)


def main(argv=None):
    args = parse_args(argv)
    results = measure(args)
    print(table(results))
    print(predicate_table(results))
    better = [s for s, m in results.items() if m['TDE']['sgg/mR@50'] > m['none']['sgg/mR@50']]
    print(f'TDE mR@50 > none mR@50 on {len(better)} of {len(results)} seeds')
    path = osp.join(args.out, 'results.json')
    with open(path, 'w') as f:
        json.dump(dict(config=args.config, iters=args.iters, nproc=args.nproc,
                       num_train=args.num_train, num_test=args.num_test,
                       data_seed=args.data_seed, results=results), f, indent=1)
    print(f'results: {path}')
    return results


if __name__ == '__main__':
    main()
