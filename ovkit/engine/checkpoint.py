"""Checkpoints that survive a kill at any moment, and clear words about ones that did not.

mmengine 0.10.7's ``CheckpointHook`` writes ``iter_N.pth`` in place (a kill mid-write leaves a
half file under the real name), rewrites ``last_checkpoint`` by truncating it first, and with
``max_keep_ckpts`` deletes the oldest checkpoint *before* writing the new one.
:class:`AtomicCheckpointHook` (hand-written: mmengine has no atomic mode) writes to a temporary
name in the same folder, ``fsync``s and renames it, then replaces ``last_checkpoint`` the same
way, and only then deletes outdated checkpoints, so at every instant ``last_checkpoint`` names
a complete, loadable file.
"""
import glob
import os
import os.path as osp
import re
import zipfile

from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

__all__ = ['AtomicCheckpointHook', 'CheckpointError', 'atomic_write', 'checkpoint_problem',
           'check_resume_checkpoint', 'check_last_checkpoint', 'latest_good_checkpoint']

TMP_SUFFIX = '.ovkit-tmp'


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message is one line naming the file and the fix."""


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp, dst):
    """Make ``tmp`` durable and give it the name ``dst`` in one step (POSIX rename)."""
    if osp.isfile(tmp):  # a folder (sharded checkpoint) is renamed as it is
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
    os.replace(tmp, dst)
    _fsync_dir(osp.dirname(osp.abspath(dst)))


def atomic_write(path, data):
    """Write ``data`` (bytes or str) to ``path`` so readers see the old or the new content.

    Args:
        path: destination file.
        data: the complete new content.
    """
    tmp = f'{path}{TMP_SUFFIX}'
    with open(tmp, 'wb') as f:
        f.write(data.encode() if isinstance(data, str) else data)
    _commit(tmp, path)


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """``CheckpointHook`` whose files are always complete; same arguments.

    Local folders only; for other storage backends it behaves as ``CheckpointHook``.
    """

    def _local(self):
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    def before_train(self, runner):
        super().before_train(runner)
        if self._local() and runner.rank == 0:
            # Left by a run killed while writing; never named by last_checkpoint.
            for stale in glob.glob(osp.join(self.out_dir, f'*{TMP_SUFFIX}')):
                os.remove(stale)
                runner.logger.info(f'removed the unfinished checkpoint {stale}')

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        # mmengine's bookkeeping, with the outdated file deleted after the new one is safe.
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                old = self.keep_ckpt_ids.popleft()
                outdated.append(osp.join(self.out_dir, self.filename_tmpl.format(old)))
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        # save_checkpoint is master-only; the other ranks return at once.
        runner.save_checkpoint(
            self.out_dir, ckpt_filename + TMP_SUFFIX, self.file_client_args,
            save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
            meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if runner.rank != 0:
            return
        _commit(self.last_ckpt + TMP_SUFFIX, self.last_ckpt)
        atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for path in outdated:
            if osp.isfile(path) and path != self.last_ckpt:
                os.remove(path)
            elif osp.isdir(path):  # deepspeed writes folders
                import shutil
                shutil.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics):
        if not self._local():
            return super()._save_best_checkpoint(runner, metrics)
        # mmengine removes the previous best before writing the new one: defer the removal
        # until the new best (and the re-saved latest checkpoint) are complete.
        backend, deferred = self.file_backend, []
        self.file_backend = _DeferRemoval(backend, deferred)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        for path in deferred:
            if osp.isfile(path):
                os.remove(path)


class _DeferRemoval:
    """A file backend that records ``remove`` calls instead of doing them."""

    def __init__(self, backend, removed):
        self._backend, self._removed = backend, removed

    def remove(self, path):
        self._removed.append(path)

    def __getattr__(self, name):
        return getattr(self._backend, name)


# --------------------------------------------------------------------------- checking files
def checkpoint_problem(path):
    """What makes ``path`` unusable as a checkpoint, or None when it looks complete.

    A cheap structural check (no unpickling): torch's zip format must end with its central
    directory and hold a ``data.pkl``; a truncated file loses the directory first.

    Args:
        path: the file to check.
    """
    if not osp.exists(path):
        return 'no such file'
    if osp.isdir(path):
        return 'a folder, not a checkpoint file'
    size = osp.getsize(path)
    if size == 0:
        return 'empty file (0 bytes)'
    if not zipfile.is_zipfile(path):
        with open(path, 'rb') as f:
            head = f.read(2)
        if head == b'PK':
            return f'truncated ({size} bytes, the end of the zip archive is missing)'
        if head[:1] == b'\x80':
            return None  # legacy (pre-zip) torch.save format: torch.load will judge it
        return f'not a torch checkpoint ({size} bytes, neither a zip archive nor a pickle)'
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f'unreadable zip archive ({exc})'
    if not any(n.endswith('/data.pkl') or n == 'data.pkl' for n in names):
        return 'a zip archive without data.pkl, not a torch checkpoint'
    return None


def _step(path):
    nums = re.findall(r'(\d+)', osp.basename(path))
    return int(nums[-1]) if nums else -1


def latest_good_checkpoint(folder, exclude=()):
    """The complete ``iter_*.pth`` / ``epoch_*.pth`` with the highest step in ``folder``.

    Args:
        folder: a work dir.
        exclude: paths to skip (e.g. the one found broken).
    """
    skip = {osp.abspath(p) for p in exclude}
    found = [p for p in glob.glob(osp.join(folder, '*.pth'))
             if re.match(r'(iter|epoch)_\d+\.pth$', osp.basename(p))
             and osp.abspath(p) not in skip]
    for path in sorted(found, key=_step, reverse=True):
        if checkpoint_problem(path) is None:
            return path
    return None


def check_resume_checkpoint(path, option='--resume'):
    """Raise :class:`CheckpointError` (one line) when ``path`` cannot be resumed from.

    The message names the file, what is wrong with it, and the newest complete checkpoint in
    the same folder with the command-line fix.

    Args:
        path: the checkpoint to resume from.
        option: how the user named it (``--resume`` or ``last_checkpoint``), for the message.
    """
    if '://' in path:
        return
    problem = checkpoint_problem(path)
    if problem is None:
        return
    good = latest_good_checkpoint(osp.dirname(path) or '.', exclude=[path])
    fix = (f'the newest complete one is {good}: resume with --resume {good}' if good else
           'no complete iter_*/epoch_* checkpoint is next to it: train from scratch '
           '(without --resume)')
    raise CheckpointError(f'{option}: {path} cannot be resumed from: {problem}; {fix}')


def check_last_checkpoint(work_dir):
    """For ``--resume`` without a path: raise :class:`CheckpointError` (one line) when the
    work dir's ``last_checkpoint`` exists but is empty or names an unusable file.

    Args:
        work_dir: the run's work dir.

    Returns:
        str or None: the checkpoint ``last_checkpoint`` names, None when there is no such file.
    """
    last = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(last):
        return None
    with open(last) as f:
        path = f.read().strip()
    if not path:
        good = latest_good_checkpoint(work_dir)
        fix = (f'the newest complete checkpoint is {good}: resume with --resume {good}' if good
               else 'no complete iter_*/epoch_* checkpoint is there: train without --resume')
        raise CheckpointError(f'--resume: {last} is empty; {fix}')
    check_resume_checkpoint(path, option=f'--resume ({last})')
    return path


def checkpoint_due(runner, by_epoch):
    """Whether a CheckpointHook will save at this point, by its own rules.

    Hooks that must put state gathered from every rank into a checkpoint call this on all ranks
    in ``after_train_iter`` / ``after_train_epoch`` (before the CheckpointHook, which has lower
    priority): ``runner.save_checkpoint`` itself runs on rank 0 only, so no collective may run
    in ``before_save_checkpoint``.
    """
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
            continue
        if by_epoch:
            due = hook.every_n_epochs(runner, hook.interval, hook.save_begin) or (
                hook.save_last and hook.is_last_train_epoch(runner))
        else:
            due = hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or (
                hook.save_last and hook.is_last_train_iter(runner))
        if due:
            return True
    return False
