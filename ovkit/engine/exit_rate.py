"""How often does a finished multi-process training exit non-zero? With and without ovkit's exit
teardown (:mod:`ovkit.engine.process`).

    python tools/analysis/exit_rate.py CONFIG [--runs 50] [--nproc 2] [--without-teardown]
        [--cfg-options k=v ...]

Launches ``--runs`` short trainings of CONFIG through torchrun, one after another, and counts
exit codes and ``terminate called without an active exception`` aborts. With
``--without-teardown`` each worker runs ``ovkit.tools.train`` with the teardown switched off
(what every run did before the fix). The default overrides make each run short: 2 iterations,
one checkpoint, one validation.
"""
import argparse
import os
import os.path as osp
import socket
import subprocess
import sys
import tempfile

ABORT = 'terminate called without an active exception'
SHORT = ['train_cfg.max_iters=2', 'train_cfg.val_interval=2',
         'default_hooks.checkpoint.interval=2']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config')
    parser.add_argument('--runs', type=int, default=50)
    parser.add_argument('--nproc', type=int, default=2)
    parser.add_argument('--without-teardown', action='store_true',
                        help='switch ovkit\'s exit teardown off (the behaviour before the fix)')
    parser.add_argument('--cfg-options', nargs='+', default=SHORT,
                        help=f'overrides of every run (default: {" ".join(SHORT)})')
    parser.add_argument('--keep-failed', default=None,
                        help='folder for the output of failed runs')
    return parser.parse_args(argv)


def _worker(argv):
    """One training process: ``--worker [--without-teardown] TRAIN_ARGS...``."""
    if argv[:1] == ['--without-teardown']:
        from ovkit.engine import process
        process.after_init_process_group = lambda: None
        argv = argv[1:]
    from ovkit.tools.train import main
    main(argv)


def main(argv=None):
    """Run the loop (or, with ``--worker``, one training process of it).

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ['--worker']:
        return _worker(argv[1:])
    args = parse_args(argv)
    failed = aborts = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.runs + 1):
            with socket.socket() as s:
                s.bind(('127.0.0.1', 0))
                port = s.getsockname()[1]
            cmd = [sys.executable, '-m', 'torch.distributed.run',
                   f'--nproc_per_node={args.nproc}', f'--master_port={port}',
                   '-m', 'ovkit.engine.exit_rate', '--worker'] + \
                (['--without-teardown'] if args.without_teardown else []) + \
                [args.config, '--launcher', 'pytorch', '--work-dir', osp.join(tmp, str(i)),
                 '--cfg-options'] + args.cfg_options
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env=dict(os.environ, OMP_NUM_THREADS='1'))
            out = proc.stdout + proc.stderr
            failed += proc.returncode != 0
            aborts += ABORT in out
            if proc.returncode != 0 and args.keep_failed:
                os.makedirs(args.keep_failed, exist_ok=True)
                with open(osp.join(args.keep_failed, f'run{i}.txt'), 'w') as f:
                    f.write(out)
            print(f'run {i}: exit {proc.returncode}{" (abort)" if ABORT in out else ""}; '
                  f'so far {failed}/{i} non-zero', flush=True)
    mode = 'without' if args.without_teardown else 'with'
    print(f'{args.nproc}-process runs {mode} ovkit\'s exit teardown: {failed}/{args.runs} exited '
          f'non-zero, {aborts} with "{ABORT}"')
    return 0


if __name__ == '__main__':
    sys.exit(main())
