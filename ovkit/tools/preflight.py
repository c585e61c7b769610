"""Check a run's inputs before it starts; what the launchers run once, before torchrun.

    python -m ovkit.tools.preflight train CONFIG [tools/train.py arguments]
    python -m ovkit.tools.preflight test CONFIG CHECKPOINT [tools/test.py arguments]

Exit 0 when every input is usable, 2 with one line per problem otherwise
(:mod:`ovkit.engine.preflight`). ``test`` also builds the model on the CPU and checks that the
checkpoint fits it (keys, shapes, finite weights), reading the weights memory-mapped.
``tools/dist_train.sh`` / ``dist_test.sh`` then set ``OVKIT_PREFLIGHT=done`` so the N worker
processes do not repeat the checks.
"""
import os
import sys
import warnings

from ovkit.engine.errors import UserError, exit_on_user_error

PREFLIGHT_ENV = 'OVKIT_PREFLIGHT'
USAGE = ('usage: python -m ovkit.tools.preflight train CONFIG [train.py args]\n'
         '       python -m ovkit.tools.preflight test CONFIG CHECKPOINT [test.py args]')


def checked_cfg(mode, args, build_cfg, force=False, report=None):
    """Build the tool's config and run the preflight on it (unless a launcher already did).

    Args:
        mode: ``'train'`` or ``'test'``.
        args: the tool's parsed arguments.
        build_cfg: the tool's ``build_cfg(args)``.
        force: check even when ``OVKIT_PREFLIGHT=done``.
        report: callable given the one-line summary on success.

    Returns:
        mmengine.Config: the config.
    """
    from ovkit.engine import preflight
    if not os.path.isfile(args.config):
        raise UserError(f"config file '{args.config}' not found (absolute path "
                        f'{os.path.abspath(args.config)})')
    from ovkit.engine.checkpoint import CheckpointError
    try:
        cfg = build_cfg(args)
    except (FileNotFoundError, CheckpointError) as exc:  # the tools' checks of --resume / CKPT
        raise UserError(str(exc).strip('"\'')) from None
    if force or os.environ.get(PREFLIGHT_ENV) != 'done':
        preflight.run(cfg, mode, resume=getattr(args, 'resume', None),
                      checkpoint=getattr(args, 'checkpoint', None), config_file=args.config,
                      logger=report)
    return cfg


def check_checkpoint_fit(cfg, checkpoint):
    """Build the model of ``cfg`` on the CPU and refuse ``checkpoint`` if it does not fit.

    Args:
        cfg: the test config.
        checkpoint: a local checkpoint file (already through the preflight).
    """
    import torch
    from mmengine.registry import MODELS, DefaultScope

    from ovkit.engine.guards import CheckpointMismatchError, checkpoint_fit_problem
    if '://' in checkpoint:
        return
    try:
        with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
            model = MODELS.build(cfg.model)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f'the model of {cfg.filename} cannot be built: {type(exc).__name__}: '
                        f'{str(exc).strip()[:400]} (run tools/test.py on one process for the '
                        'traceback)') from None
    state = torch.load(checkpoint, map_location='cpu', weights_only=True, mmap=True)
    problem = checkpoint_fit_problem(model, state)
    if problem:
        raise CheckpointMismatchError(
            f'checkpoint {checkpoint!r} does not fit the model of this config: {problem}. Pass '
            'the checkpoint this config trained, or --allow-partial to evaluate with only the '
            'weights that fit.')


def main(argv=None):
    # setuptools' deprecation of pkg_resources (imported by mmengine and the hosts) would be
    # the only other output of a launcher's preflight: not the user's concern.
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in ('train', 'test'):
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    mode, rest = argv[0], argv[1:]
    if mode == 'train':
        from ovkit.tools import train as tool
    else:
        from ovkit.tools import test as tool
    args = tool.parse_args(rest)

    def report(line):
        print(line, file=sys.stderr, flush=True)

    with exit_on_user_error():
        cfg = checked_cfg(mode, args, tool.build_cfg, force=True, report=report)
        if mode == 'test' and not args.allow_partial:
            check_checkpoint_fit(cfg, args.checkpoint)


if __name__ == '__main__':
    main()
