"""Train a model from an mmengine config (mmdet / mmaction2 / mmpretrain scope).

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--cfg-options k=v]
    tools/dist_train.sh CONFIG N [same flags]        # N processes, gloo on a CPU machine

Follows mmdet's tools/train.py; ``import ovkit`` first installs ovkit.compat (weights-only
checkpoint loading, CPU distributed launch, mmaction2 wheel fix). ``tools/train.py`` is the
entry point.
"""
import argparse
import os
import os.path as osp
import warnings

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import ovkit  # noqa: F401  (applies ovkit.compat before mmengine builds anything)

# ovkit.engine registers the hooks the runtime bases name (exact resume, atomic checkpoints,
# skipped samples, non-finite loss).
from ovkit.engine import guards, process
from ovkit.engine.checkpoint import check_last_checkpoint, check_resume_checkpoint
from ovkit.engine.errors import exit_on_user_error
from ovkit.engine.preflight import RESUME_AUTO, RESUME_LAST
from ovkit.tools.preflight import checked_cfg


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (fp16 on CUDA; bf16 autocast on CPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual total batch size')
    parser.add_argument('--resume', nargs='?', type=str, const=RESUME_LAST,
                        help='resume from CKPT; without CKPT from the work dir\'s last '
                        'checkpoint, which must exist; "--resume auto": from it when there is '
                        'one, else start a new run')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. train_cfg.max_iters=10')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def setup_amp(cfg):
    """--amp: mmengine's AmpOptimWrapper needs a GPU; on a CPU we autocast to bf16 instead,
    which needs no loss scaling."""
    import torch
    optim_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if optim_type == 'AmpOptimWrapper':
        return
    if optim_type != 'OptimWrapper':
        warnings.warn(f'--amp ignored: optim_wrapper type is {optim_type}')
        return
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    if torch.cuda.is_available():
        cfg.optim_wrapper.loss_scale = 'dynamic'
    else:
        import ovkit.compat.amp  # noqa: F401  (registers OVKitCPUAmpOptimWrapper)
        cfg.optim_wrapper.type = 'OVKitCPUAmpOptimWrapper'
        cfg.optim_wrapper.dtype = 'bfloat16'


def build_cfg(args):
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        setup_amp(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' in cfg and 'base_batch_size' in cfg.auto_scale_lr:
            cfg.auto_scale_lr.enable = True
        else:
            raise RuntimeError(f'{args.config} has no auto_scale_lr.base_batch_size, which '
                               '--auto-scale-lr needs; add it to the config.')
    if args.resume in (RESUME_LAST, RESUME_AUTO):  # the preflight tells them apart
        cfg.resume = True
        cfg.load_from = None
        check_last_checkpoint(cfg.work_dir)
    elif args.resume is not None:
        if '://' not in args.resume and not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume {args.resume}: no such checkpoint file')
        check_resume_checkpoint(args.resume)
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv=None):
    if process.is_launched_worker():
        process.set_parent_death_signal()  # a killed launcher takes its workers along
    args = parse_args(argv)
    # Inputs checked before anything starts; errors of ovkit.engine print one line, once.
    with exit_on_user_error():
        cfg = checked_cfg('train', args, build_cfg)
        if 'runner_type' not in cfg:
            runner = Runner.from_cfg(cfg)
        else:
            runner = RUNNERS.build(cfg)
        if runner.distributed:
            import torch.distributed as dist
            runner.logger.info(f'distributed run: world size {runner.world_size}, '
                               f'backend {dist.get_backend()}')
        guards.install(runner)  # annotation sanity + skipped samples as datasets are built
        runner.train()


if __name__ == '__main__':
    main()
