"""Kill-at-a-random-moment-and-resume stress test of the training tools.

    python tools/analysis/stress_resume.py [CONFIG] [--nproc 2] [--rounds 10] [--kills 2]

Trains CONFIG once without interruption, then ``--rounds`` times: starts the same training,
SIGKILLs the launcher at a random moment (``tools/dist_train.sh`` for ``--nproc`` > 1, else
``tools/train.py``), checks that no worker outlived it and that the latest checkpoint loads,
resumes with ``--resume auto``, repeats ``--kills`` times, lets the last run finish and compares its
final weights with the uninterrupted run's. Prints the figures docs/reliability.md reports.
Runs with ``randomness.deterministic=True``; exits 1 when any figure falls short.
"""
import argparse
import os
import os.path as osp
import random
import shutil
import signal
import subprocess
import sys
import time

DEFAULT_CONFIG = 'configs/shapes/faster_rcnn_tiny.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', default=DEFAULT_CONFIG,
                        help=f'training config (default {DEFAULT_CONFIG}, run from a checkout '
                        'that has data/shapes)')
    parser.add_argument('--nproc', type=int, default=2, help='processes per training')
    parser.add_argument('--rounds', type=int, default=10,
                        help='interrupted trainings, each compared with the reference')
    parser.add_argument('--kills', type=int, default=2, help='SIGKILLs per round')
    parser.add_argument('--max-iters', type=int, default=12, help='iterations per training')
    parser.add_argument('--interval', type=int, default=2, help='checkpoint interval')
    parser.add_argument('--work-dir', default='work_dirs/stress_resume')
    parser.add_argument('--seed', type=int, default=0, help='seed of the kill times')
    parser.add_argument('--quick', action='store_true',
                        help='1 round, 1 kill, 6 iterations: checks that the loop works')
    parser.add_argument('--timeout', type=float, default=1800,
                        help='seconds one training may take')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='more overrides for every training, e.g. '
                        'default_hooks.exact_resume.enabled=False (mmengine alone)')
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.kills, args.max_iters = 1, 1, 6
    if args.nproc < 1 or args.rounds < 1 or args.kills < 1 or args.max_iters < 2:
        parser.error('--nproc, --rounds and --kills must be >= 1, --max-iters >= 2')
    return args


def _command(args, work_dir, resume):
    options = [f'train_cfg.max_iters={args.max_iters}',
               f'train_cfg.val_interval={args.max_iters}',
               f'default_hooks.checkpoint.interval={args.interval}',
               'default_hooks.checkpoint.by_epoch=False',
               'default_hooks.checkpoint.max_keep_ckpts=2',
               'randomness.seed=0', 'randomness.deterministic=True']
    if args.nproc > 1:
        cmd = ['bash', osp.join(args.tools, 'dist_train.sh'), args.config, str(args.nproc)]
    else:
        cmd = [sys.executable, osp.join(args.tools, 'train.py'), args.config]
    cmd += ['--work-dir', work_dir] + (['--resume', 'auto'] if resume else [])
    return cmd + ['--cfg-options'] + options + args.cfg_options


def _env(args):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1')
    # What dist_train.sh does, for tools/train.py too: the checkout's ovkit first.
    root = osp.dirname(osp.abspath(args.tools))
    env['PYTHONPATH'] = os.pathsep.join(p for p in (root, env.get('PYTHONPATH')) if p)
    return env


def _descendants(pid):
    """PIDs of every live process below ``pid`` (Linux /proc)."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def _latest(work_dir):
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return f.read().strip() or ''


def _loadable(path):
    import torch

    import ovkit  # noqa: F401  (compat: mmengine checkpoints load with weights_only)
    try:
        torch.load(path, map_location='cpu', weights_only=True)
        return True
    except Exception:  # noqa: BLE001  (any failure means "not loadable")
        return False


def _state_dict(path):
    import torch

    import ovkit  # noqa: F401
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def _compare(a, b):
    """(identical, number of tensors that differ, largest absolute difference)."""
    import torch
    differ = [k for k in a if k not in b or not torch.equal(a[k], b[k])]
    worst = max(((a[k].double() - b[k].double()).abs().max().item() for k in differ
                 if k in b and a[k].shape == b[k].shape), default=0.0)
    return not differ, len(differ), worst


def _wait_for_new_checkpoint(launcher, work_dir, before):
    while launcher.poll() is None and _latest(work_dir) in (before, ''):
        time.sleep(0.05)


def _run(args, work_dir, resume, log_path):
    """Run a training to its end; returns (exit code, seconds between checkpoints)."""
    with open(log_path, 'a') as log:
        launcher = subprocess.Popen(_command(args, work_dir, resume), env=_env(args),
                                    stdout=log, stderr=subprocess.STDOUT)
    times, latest = [], _latest(work_dir)
    deadline = time.time() + args.timeout
    while launcher.poll() is None and time.time() < deadline:
        _wait_for_new_checkpoint(launcher, work_dir, latest)
        if _latest(work_dir) not in (latest, ''):
            latest = _latest(work_dir)
            times.append(time.time())
    if launcher.poll() is None:
        launcher.kill()
    gaps = [b - a for a, b in zip(times, times[1:])]
    return launcher.wait(), (sum(gaps) / len(gaps) if gaps else 5.0)


def _run_and_kill(args, work_dir, resume, log_path, rng, gap):
    """Start a training; once it wrote a new checkpoint, SIGKILL its launcher at a random
    moment of the next checkpoint interval (inside an iteration, a save or validation).
    Returns a dict, or None when the training finished first."""
    before = _latest(work_dir)
    with open(log_path, 'a') as log:
        launcher = subprocess.Popen(_command(args, work_dir, resume), env=_env(args),
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
    start = time.time()
    _wait_for_new_checkpoint(launcher, work_dir, before)
    deadline = time.time() + rng.uniform(0, gap)
    while time.time() < deadline and launcher.poll() is None:
        time.sleep(0.02)
    if launcher.poll() is not None:
        return None
    workers = _descendants(launcher.pid)
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    limit = time.time() + 30
    while any(_alive(p) for p in workers) and time.time() < limit:
        time.sleep(0.2)
    orphans = [p for p in workers if _alive(p)]
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    latest = _latest(work_dir)
    return dict(at=time.time() - start, orphans=len(orphans), latest=latest,
                loadable=bool(latest) and _loadable(latest))


def main(argv=None, tools='tools'):
    """Run the stress loop.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
        tools: the folder holding ``train.py`` and ``dist_train.sh``.
    """
    args = parse_args(argv)
    args.tools = tools
    if not osp.isfile(args.config):
        sys.exit(f'error: config {args.config} not found (run from the repository root, or '
                 'pass a config path)')
    rng = random.Random(args.seed)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    log_path = osp.join(args.work_dir, 'runs.log')
    print(f'stress_resume: {args.config}, {args.nproc} process(es), {args.rounds} round(s) x '
          f'{args.kills} kill(s), {args.max_iters} iterations, checkpoint every '
          f'{args.interval}; logs in {log_path}', flush=True)

    ref_dir = osp.join(args.work_dir, 'reference')
    start = time.time()
    code, gap = _run(args, ref_dir, False, log_path)
    if code != 0:
        sys.exit(f'error: the uninterrupted training failed; see {log_path}')
    reference = _state_dict(_latest(ref_dir))
    print(f'reference: {time.time() - start:.0f} s, {osp.basename(_latest(ref_dir))}, '
          f'{gap:.1f} s between checkpoints', flush=True)

    kills = orphans = loadable = identical = finished_early = 0
    for r in range(1, args.rounds + 1):
        work = osp.join(args.work_dir, f'round{r}')
        notes = []
        for k in range(args.kills):
            result = _run_and_kill(args, work, k > 0, log_path, rng, gap)
            if result is None:
                finished_early += 1
                notes.append('finished before the kill')
                break
            kills += 1
            orphans += result['orphans']
            loadable += result['loadable']
            notes.append(f'killed at {result["at"]:.1f} s (latest '
                         f'{osp.basename(result["latest"] or "-")}'
                         f'{"" if result["loadable"] else " NOT LOADABLE"}'
                         f'{", %d orphans" % result["orphans"] if result["orphans"] else ""})')
        if _latest(work) is None or not _latest(work).endswith(f'iter_{args.max_iters}.pth'):
            if _run(args, work, True, log_path)[0] != 0:
                notes.append(f'resume FAILED (see {log_path})')
                print(f'round {r}: ' + '; '.join(notes), flush=True)
                continue
        same, n_diff, worst = _compare(reference, _state_dict(_latest(work)))
        identical += same
        notes.append('bit-identical' if same else
                     f'{n_diff} tensors differ (max abs diff {worst:.3g})')
        print(f'round {r}: ' + '; '.join(notes), flush=True)

    print(f'kills: {kills} (orphaned workers: {orphans}; runs that finished before their '
          f'kill: {finished_early})')
    print(f'loadable latest checkpoints: {loadable}/{kills}')
    print(f'bit-identical final weights: {identical}/{args.rounds}')
    ok = orphans == 0 and loadable == kills and identical == args.rounds
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
