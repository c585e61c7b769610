"""Silent wrong results become errors: non-finite arrays and losses, checkpoints that do not fit.

* :func:`check_finite` refuses NaN/inf in an array read from a file, naming the file and row
  (BARON's class embeddings call it at load).
* :class:`NonFiniteLossHook` stops training at the first iteration whose loss is NaN/inf,
  naming the iteration and the loss terms, before a checkpoint of NaN weights is written. All
  ranks decide together (one ``all_reduce`` of a flag per checked iteration), so they stop at
  the same iteration. mmdet's ``CheckInvalidLossHook`` checks only the total, every 50
  iterations, with a bare ``assert``, and exists in mmdet only; this one is written by hand
  for every host. Enabled by ovkit's runtime bases (``default_hooks.nonfinite_loss``);
  opt out with ``default_hooks = dict(nonfinite_loss=None)``.
* :class:`CheckpointFitHook` (``tools/test.py``) refuses a checkpoint whose keys or shapes do
  not fit the model, or whose weights are not finite, unless ``--allow-partial``: mmengine
  loads it non-strictly and only logs a warning.
* :func:`install` wires the data guards into a Runner before it builds a data loader:
  annotation sanity (:mod:`ovkit.engine.sanity`) and skipped-sample counting
  (:mod:`ovkit.engine.skips`).
"""
import re

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce, get_dist_info
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .errors import UserError

__all__ = ['NonFiniteArrayError', 'NonFiniteLossError', 'CheckpointMismatchError',
           'non_finite_rows', 'check_finite', 'NonFiniteLossHook', 'CheckpointFitHook',
           'checkpoint_fit_problem', 'install']


class NonFiniteArrayError(UserError, ValueError):
    """An array read from a file holds NaN or inf."""


class NonFiniteLossError(UserError):
    """Training produced a NaN/inf loss (raised by every rank together)."""

    collective = True


class CheckpointMismatchError(UserError):
    """A checkpoint does not fit the model it is loaded into."""

    collective = True  # every rank loads the same file into the same model


def non_finite_rows(array):
    """Indices of the rows (first axis) of ``array`` that hold a NaN or inf.

    Args:
        array: a numpy array or torch tensor with at least one dimension.
    """
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().float().numpy()
    array = np.asarray(array)
    if array.ndim == 0:
        return [] if np.isfinite(array) else [0]
    bad = ~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1)
    return np.flatnonzero(bad).tolist()


def check_finite(array, what, fix=''):
    """Raise :class:`NonFiniteArrayError` naming ``what`` and the first bad row.

    Args:
        array: the loaded array (numpy or torch).
        what: the config key and file, e.g. ``"cls_embeddings_path='x.npy'"``.
        fix: how to make a good file (appended to the message).
    """
    bad = non_finite_rows(array)
    if bad:
        raise NonFiniteArrayError(
            f'{what} holds NaN/inf in {len(bad)} of its {len(array)} rows (first: row {bad[0]}'
            f'{", " + str(bad[1:4])[1:-1] if len(bad) > 1 else ""}); a NaN there makes every '
            f'loss and weight NaN. {fix}'.strip())


def _unwrap(model):
    return model.module if is_model_wrapper(model) else model


# --------------------------------------------------------------------------- loss
@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop training when a loss term is NaN/inf (see the module docstring).

    Runs before the checkpoint and logger hooks of the same iteration, so no checkpoint of
    NaN weights is saved after the bad step.

    Args:
        enabled: False makes the hook a no-op.
        interval: check every ``interval`` iterations (each check is one ``all_reduce``).
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, enabled=True, interval=1):
        self.enabled = enabled
        self.interval = max(1, int(interval))

    @staticmethod
    def bad_terms(outputs):
        """``{name: value}`` of the non-finite loss terms in the train step's outputs."""
        bad = {}
        for name, value in (outputs or {}).items():
            if 'loss' not in name:
                continue
            if isinstance(value, torch.Tensor):
                finite = bool(torch.isfinite(value.detach()).all())
                shown = float(value.detach().float().mean()) if value.numel() else value
            elif isinstance(value, (int, float)):
                finite, shown = bool(np.isfinite(value)), value
            else:
                continue
            if not finite:
                bad[name] = shown
        if 'loss' in bad:  # the terms first, the total (their sum) last
            bad['loss'] = bad.pop('loss')
        return bad

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if not self.enabled or not self.every_n_train_iters(runner, self.interval):
            return
        bad = self.bad_terms(outputs)
        rank, world_size = get_dist_info()
        if world_size > 1:
            flag = torch.tensor([1.0 if bad else 0.0])
            all_reduce(flag, op='sum')
            if float(flag) == 0:
                return
            per_rank = all_gather_object(bad)
        elif not bad:
            return
        else:
            per_rank = [bad]
        first = next((i, b) for i, b in enumerate(per_rank) if b)
        terms = ', '.join(f'{k}={v}' for k, v in first[1].items())
        where = f' on rank {first[0]} ({sum(bool(b) for b in per_rank)} of {world_size} ranks)' \
            if world_size > 1 else ''
        raise NonFiniteLossError(
            f'training stopped at iteration {runner.iter + 1}: the loss is not finite ({terms})'
            f'{where}; no checkpoint was written after it. Usual causes: a learning rate too '
            'high for the batch size, NaN/inf in the inputs or in loaded arrays, fp16 overflow '
            'under --amp (train without it, or with a dynamic loss scale). To train on anyway, '
            'set default_hooks.nonfinite_loss=None in the config.')


# --------------------------------------------------------------------------- checkpoints
def _examples(items, n=3):
    return ', '.join(items[:n]) + (', ...' if len(items) > n else '')


def checkpoint_fit_problem(model, checkpoint, revise_keys=((r'^module\.', ''),)):
    """What does not fit when loading ``checkpoint`` into ``model``, or None.

    Compares keys and shapes with ``model.state_dict()`` (as mmengine loads it, after
    stripping ``module.``) and checks that the weights are finite.

    Args:
        model: the (unwrapped) model.
        checkpoint: the loaded checkpoint dict (``{'state_dict': ...}`` or a state dict).
        revise_keys: mmengine's key rewrites applied before loading.
    """
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        return f'it holds no state dict (found {type(state).__name__})'
    for pattern, repl in revise_keys:
        state = {re.sub(pattern, repl, k): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
              for k in sorted(own.keys() & state.keys())
              if isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f'{len(missing)} of the model\'s {len(own)} weights are missing '
                     f'({_examples(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} weights are not in the model ({_examples(unexpected)})')
    if shapes:
        parts.append(f'{len(shapes)} have another shape ({_examples(shapes, 2)})')
    nonfinite = [k for k, v in state.items() if isinstance(v, torch.Tensor)
                 and v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        parts.append(f'{len(nonfinite)} weights hold NaN/inf ({_examples(nonfinite)})')
    return '; '.join(parts) or None


class CheckpointFitHook(Hook):
    """Refuse (or, with ``allow_partial``, warn about) a checkpoint that does not fit the model.

    Runs in ``after_load_checkpoint``, which mmengine calls with the loaded dict before it
    loads the weights non-strictly.

    Args:
        allow_partial: only warn (``tools/test.py --allow-partial``).
        source: how the user named the checkpoint, for the message.
    """

    priority = 'VERY_HIGH'

    def __init__(self, allow_partial=False, source='checkpoint'):
        self.allow_partial = allow_partial
        self.source = source

    def after_load_checkpoint(self, runner, checkpoint):
        problem = checkpoint_fit_problem(_unwrap(runner.model), checkpoint)
        if problem is None:
            return
        if self.allow_partial:
            runner.logger.warning(f'--allow-partial: {self.source} does not fit the model: '
                                  f'{problem}; evaluating with the weights that fit')
            return
        raise CheckpointMismatchError(
            f'{self.source} does not fit the model of this config: {problem}. Pass the '
            'checkpoint this config trained, or --allow-partial to evaluate with only the '
            'weights that fit.')


# --------------------------------------------------------------------------- wiring
class _Prebuilt:
    """A dataset ``type`` that returns an already built dataset; copies as itself (mmengine
    deep-copies the loader config, which would copy the whole dataset)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self, **kwargs):
        return self.dataset

    def __deepcopy__(self, memo):
        return self


class _GuardedBuild:
    """Stands in for ``runner.build_dataloader``: builds the dataset first, checks its
    annotations and protects its pipeline, then lets mmengine build the loader around it,
    so samplers see the final dataset and workers start with the protected pipeline."""

    def __init__(self, runner):
        self.runner = runner
        self.original = type(runner).build_dataloader

    def __call__(self, dataloader, seed=None, diff_rank_seed=False):
        from mmengine.registry import DATASETS

        from . import sanity, skips
        if isinstance(dataloader, dict) and isinstance(dataloader.get('dataset'), dict):
            dataloader = dict(dataloader)
            dataset = DATASETS.build(dataloader['dataset'])
            if hasattr(dataset, 'full_init'):
                dataset.full_init()
            sanity.check_dataset(dataset, is_main=get_dist_info()[0] == 0)
            hook = skips.find_hook(self.runner)
            if hook is not None:
                skips.protect(dataset, hook.max_consecutive)
            dataloader['dataset'] = dict(type=_Prebuilt(dataset))
        return self.original(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)


def install(runner, mode='train', checkpoint=None, allow_partial=False):
    """Wire ovkit's run-time guards into ``runner`` (call before ``train()`` / ``test()``).

    Args:
        runner: an mmengine Runner, built but not started.
        mode: ``'train'`` or ``'test'``.
        checkpoint: test only: how the checkpoint was named, for messages.
        allow_partial: test only: accept a checkpoint that fits the model only in part.
    """
    runner.build_dataloader = _GuardedBuild(runner)
    if mode == 'test':
        runner.register_hook(CheckpointFitHook(allow_partial, f'checkpoint {checkpoint!r}'))
