"""Exact resume: a run killed at any iteration and resumed ends bit-identical to one that never
stopped (same seed, ``deterministic=True``, same number of processes, ``num_workers=0``).

mmengine 0.10.7 resumes weights, optimizer, schedulers and the iteration count, and falls short
in four places, which :class:`ExactResumeHook` (written by hand; mmengine has no equivalent)
fills:

* **Random state.** torch / numpy / python (and CUDA) generators are re-seeded, not restored.
  The hook gathers every rank's states when a checkpoint is due and stores them in the
  checkpoint under ``'ovkit_resume'``; a resumed rank restores its own right before it draws
  its first batch.
* **Data position.** ``IterBasedTrainLoop`` skips consumed batches by *loading* them again
  (slow, and it draws augmentation randomness), ``EpochBasedTrainLoop`` restarts the epoch.
  The hook stores each rank's sampler epoch and batches consumed in it, and on resume the
  batch sampler skips that many batches of indices without loading a sample.
* **Validation** consumes random numbers between a checkpoint and the next iteration (each
  ``iter(dataloader)`` draws a seed). The hook makes validation transparent: it restores the
  generators after it, so an interrupted run and an uninterrupted one draw the same numbers.
* **Non-persistent buffers** (e.g. BARON's feature queues) are left out of ``state_dict`` on
  purpose and differ per rank; they feed the loss, so the hook stores each rank's copy in the
  resume state (not in ``state_dict``: ``load_from`` and ``tools/test.py`` never see them).

With ``num_workers > 0`` position, weights, optimizer and main-process randomness are restored,
but a resumed data worker restarts its own generators, so augmentations after the resume point
differ from an uninterrupted run (as with mmengine alone).
"""
import random

import numpy as np
import torch
from mmengine.dist import gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner.loops import (
    EpochBasedTrainLoop,
    IterBasedTrainLoop,
    _InfiniteDataloaderIterator,
)

RESUME_KEY = 'ovkit_resume'
STATE_VERSION = 1

__all__ = ['ExactResumeHook', 'RESUME_KEY', 'get_rng_state', 'set_rng_state']


# --------------------------------------------------------------------------- random state
def get_rng_state():
    """States of the python, numpy, torch (and initialised CUDA) global generators.

    Stored as tensors and plain Python values only, so a checkpoint holding them still loads
    with ``torch.load(weights_only=True)``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(python=random.getstate(),
                 numpy=(kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                        int(has_gauss), float(cached)),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what :func:`get_rng_state` returned.

    Args:
        state: a dict from :func:`get_rng_state`.
    """
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


# --------------------------------------------------------------------------- buffers
def non_persistent_buffers(model):
    """``{qualified name: cpu copy}`` of the buffers ``state_dict`` leaves out."""
    out = {}
    for prefix, module in model.named_modules():
        for name in module._non_persistent_buffers_set:
            buf = module._buffers.get(name)
            if buf is not None:
                out[f'{prefix}.{name}' if prefix else name] = buf.detach().cpu().clone()
    return out


def load_non_persistent_buffers(model, buffers):
    """Copy saved non-persistent buffers back in place.

    Args:
        model: the unwrapped model.
        buffers: what :func:`non_persistent_buffers` returned in the interrupted run.

    Returns:
        tuple: names whose value changed (e.g. feature queues), names that did not fit.
    """
    current = dict(model.named_buffers())
    changed, mismatched = [], []
    for name, value in buffers.items():
        buf = current.get(name)
        if buf is None or buf.shape != value.shape:
            mismatched.append(name)
            continue
        value = value.to(buf.device, buf.dtype)
        if not torch.equal(buf, value):
            changed.append(name)
        with torch.no_grad():
            buf.copy_(value)
    return changed, mismatched


# --------------------------------------------------------------------------- data position
class _SkipFirstBatches:
    """Batch sampler that, on its next ``__iter__`` only, drops the first ``skip`` batches of
    indices (no sample is loaded), calls ``on_skipped`` and hands the data loader back its own
    batch sampler. Skipping batches of the real sampler, not indices, keeps stateful batch
    samplers such as mmdet's ``AspectRatioBatchSampler`` exactly where they were."""

    def __init__(self, loader, inner, skip, on_skipped):
        self.loader, self.inner, self.skip, self.on_skipped = loader, inner, skip, on_skipped

    def __iter__(self):
        batches = iter(self.inner)
        for _ in range(self.skip):
            if next(batches, None) is None:
                break
        # DataLoader forbids re-assigning batch_sampler after construction (to protect a
        # running iterator); the iterator reads it only when an epoch starts, so putting the
        # original back is safe here.
        object.__setattr__(self.loader, 'batch_sampler', self.inner)
        if self.on_skipped is not None:
            self.on_skipped()
        yield from batches

    def __len__(self):
        return len(self.inner)

    def __getattr__(self, name):
        if name == 'inner':
            raise AttributeError(name)
        return getattr(self.inner, name)


class _AlreadyAdvanced:
    """Stands in for ``IterBasedTrainLoop.dataloader_iterator`` on resume. mmengine advances
    that iterator once per finished iteration, loading every batch again; the batch sampler
    already skips them, so these calls return None. Afterwards the loop gets the real one."""

    def __init__(self, loop, inner, skip):
        self.loop, self.inner, self.skip = loop, inner, skip

    def __iter__(self):
        return self

    def __next__(self):
        if self.skip > 0:
            self.skip -= 1
            if self.skip == 0:
                self.loop.dataloader_iterator = self.inner
            return None
        self.loop.dataloader_iterator = self.inner
        return next(self.inner)

    @property
    def _epoch(self):
        return self.inner._epoch


def _set_sampler_epoch(loader, epoch):
    for sampler in (getattr(loader, 'sampler', None),
                    getattr(getattr(loader, 'batch_sampler', None), 'sampler', None)):
        if hasattr(sampler, 'set_epoch'):
            sampler.set_epoch(epoch)
            return


# --------------------------------------------------------------------------- the hook
@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Stores what mmengine's resume leaves out and restores it (see the module docstring).

    Enabled for every ovkit config by the runtime bases (``default_hooks.exact_resume``).
    It runs just before ``CheckpointHook`` (priority 85 < 90), so the random state it stores
    is the one the next iteration starts from. It also upgrades a plain ``CheckpointHook`` to
    :class:`~ovkit.engine.checkpoint.AtomicCheckpointHook` (same settings, safe writes).

    Args:
        enabled: False turns the hook into a no-op (``default_hooks.exact_resume.enabled``).
        atomic_checkpoints: upgrade a plain ``CheckpointHook`` to ``AtomicCheckpointHook``.
    """

    priority = 85

    def __init__(self, enabled=True, atomic_checkpoints=True):
        self.enabled = enabled
        self.atomic_checkpoints = atomic_checkpoints
        self._epoch, self._pos = 0, 0  # sampler epoch and batches consumed in it
        self._stash = None  # gathered state of the checkpoint being written
        self._loaded = None  # state read by the last load_checkpoint
        self._pending = None  # state to apply when training starts
        self._val_rng = None

    # ------------------------------------------------------------------ setup
    def before_run(self, runner):
        if not (self.enabled and self.atomic_checkpoints):
            return
        from .checkpoint import AtomicCheckpointHook
        for hook in runner.hooks:
            if type(hook) is CheckpointHook:
                # Same class plus safe writes and no new state: every attribute the config
                # set stays valid.
                hook.__class__ = AtomicCheckpointHook
                runner.logger.info('ExactResumeHook: CheckpointHook writes atomically '
                                   '(AtomicCheckpointHook)')

    def after_load_checkpoint(self, runner, checkpoint):
        self._loaded = checkpoint.get(RESUME_KEY) if self.enabled else None

    def before_train(self, runner):
        if not self.enabled or runner.iter == 0:
            return
        state = self._loaded
        if state is None:
            runner.logger.warning(
                f'Resumed at iteration {runner.iter} from a checkpoint without exact-resume '
                'state (written without ExactResumeHook): random state and data order after '
                'this point differ from an uninterrupted run.')
            return
        world_size = get_dist_info()[1]
        if state.get('version') != STATE_VERSION or state.get('iter') != runner.iter:
            runner.logger.warning('Exact-resume state does not belong to the resumed '
                                  f'iteration {runner.iter}; ignored.')
        elif state['world_size'] != world_size:
            runner.logger.warning(
                f'The checkpoint was written by {state["world_size"]} processes and this run '
                f'has {world_size}: data order and random state cannot continue exactly, the '
                'run continues as mmengine resumes it.')
        else:
            self._pending = state['ranks'][get_dist_info()[0]]
        self._loaded = None

    def before_train_epoch(self, runner):
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        changed, bad = load_non_persistent_buffers(model, state['buffers'])
        if bad:
            runner.logger.warning(f'Exact resume: buffers not restored (missing or of another '
                                  f'shape): {", ".join(bad[:5])}')
        epoch, pos = state['data']['epoch'], state['data']['pos']
        loop = runner.train_loop
        loader = loop.dataloader

        def restore():
            set_rng_state(state['rng'])

        if getattr(loader, 'batch_sampler', None) is None:
            runner.logger.warning('Exact resume needs a data loader with a batch sampler: '
                                  'random state restored, data position left to mmengine.')
            restore()
        elif isinstance(loop, IterBasedTrainLoop):
            _set_sampler_epoch(loader, epoch)
            object.__setattr__(loader, 'batch_sampler',
                               _SkipFirstBatches(loader, loader.batch_sampler, pos, restore))
            inner = _InfiniteDataloaderIterator(loader)
            inner._epoch = epoch
            loop.dataloader_iterator = _AlreadyAdvanced(loop, inner, loop.iter)
        elif isinstance(loop, EpochBasedTrainLoop) and pos > 0:
            object.__setattr__(loader, 'batch_sampler',
                               _SkipFirstBatches(loader, loader.batch_sampler, pos, restore))
        else:
            if not isinstance(loop, EpochBasedTrainLoop):
                runner.logger.warning(f'Exact resume does not know {type(loop).__name__}: '
                                      'random state restored, data position left to it.')
            restore()
        self._epoch, self._pos = epoch, pos
        runner.logger.info(
            f'Exact resume: random state of rank {get_dist_info()[0]} restored; data continues '
            f'at sampler epoch {epoch} after {pos} batches (skipped without loading); '
            f'non-persistent buffers restored: {len(state["buffers"])}, of which changed by '
            f'training: {", ".join(changed[:8]) or "none"}.')

    # ------------------------------------------------------------------ tracking and saving
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not self.enabled:
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            epoch = getattr(loop.dataloader_iterator, '_epoch', 0)
        else:
            epoch = runner.epoch
        if epoch != self._epoch:
            self._epoch, self._pos = epoch, 0
        self._pos += 1
        if self._checkpoint_due(runner, by_epoch=False):
            self._stash = self._gather(runner, runner.iter + 1)

    def after_train_epoch(self, runner):
        if not self.enabled:
            return
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            self._epoch, self._pos = runner.epoch + 1, 0
        if self._checkpoint_due(runner, by_epoch=True):
            self._stash = self._gather(runner, runner.iter)

    def before_save_checkpoint(self, runner, checkpoint):
        if self._stash is not None and self._stash['iter'] == checkpoint['meta'].get('iter'):
            checkpoint[RESUME_KEY] = self._stash

    def before_val(self, runner):
        # Validation must not move the training generators (see the module docstring).
        if self.enabled:
            self._val_rng = get_rng_state()

    def after_val(self, runner):
        if self._val_rng is not None:
            set_rng_state(self._val_rng)
            self._val_rng = None

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _checkpoint_due(runner, by_epoch):
        from .checkpoint import checkpoint_due
        return checkpoint_due(runner, by_epoch)

    def _gather(self, runner, iteration):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        local = dict(rng=get_rng_state(), data=dict(epoch=self._epoch, pos=self._pos),
                     buffers=non_persistent_buffers(model))
        rank, world_size = get_dist_info()
        ranks = gather_object(local, dst=0) if world_size > 1 else [local]
        if rank != 0:
            return None
        return dict(version=STATE_VERSION, iter=iteration, world_size=world_size, ranks=ranks)
