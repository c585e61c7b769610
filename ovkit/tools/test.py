"""Evaluate a checkpoint from an mmengine config (mmdet / mmaction2 / mmpretrain scope).

    python tools/test.py CONFIG CKPT [--out results.pkl] [--show-dir DIR] [--cfg-options k=v]
    tools/dist_test.sh CONFIG CKPT N [same flags]
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import ovkit  # noqa: F401  (applies ovkit.compat: weights-only loading of mmengine checkpoints)
from ovkit.engine import guards  # (ovkit.engine registers the hooks the runtime bases name)
from ovkit.engine.errors import exit_on_user_error
from ovkit.tools.preflight import checked_cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='dump raw predictions to this .pkl/.pickle file (detection: '
                             "mmdet's DumpDetResults, masks RLE-encoded)")
    parser.add_argument('--show', action='store_true', help='show predictions in a window')
    parser.add_argument('--show-dir', help='draw predictions into images under this dir '
                        '(relative to the run\'s log dir, as in mmdet)')
    parser.add_argument('--wait-time', type=float, default=2, help='--show interval (s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    parser.add_argument('--allow-partial', action='store_true',
                        help='evaluate a checkpoint that fits the model only in part (missing, '
                        'extra or reshaped weights); refused without it')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    # checked before anything is built, so a typo costs no model or dataset loading
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        parser.error(f'--out {args.out}: the output file must end in .pkl or .pickle')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg, args):
    """Turn on the config's visualization hook (mmdet/mmaction/mmpretrain all name it so)."""
    hook = cfg.default_hooks.get('visualization') if 'default_hooks' in cfg else None
    if hook is None:
        raise RuntimeError(f'{args.config} has no default_hooks.visualization, which --show '
                           'and --show-dir need.')
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        hook['test_out_dir'] = args.show_dir


def build_cfg(args):
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    return cfg


def dump_metric(cfg, out):
    """The metric that writes ``--out``: mmdet's ``DumpDetResults`` for detection configs
    (it drops the images from the results and RLE-encodes masks, as mmdet's tools/test.py),
    mmengine's ``DumpResults`` for the other hosts."""
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    return DumpResults(out_file_path=out)


def main(argv=None):
    args = parse_args(argv)
    # Inputs checked before anything starts; errors of ovkit.engine print one line, once.
    with exit_on_user_error():
        cfg = checked_cfg('test', args, build_cfg)
        runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
        if args.out is not None:  # suffix checked in parse_args
            runner.test_evaluator.metrics.append(dump_metric(cfg, args.out))
        # Checkpoint fit (unless --allow-partial), annotation sanity, skipped samples.
        guards.install(runner, 'test', checkpoint=args.checkpoint,
                       allow_partial=args.allow_partial)
        metrics = runner.test()
    return metrics


if __name__ == '__main__':
    main()
