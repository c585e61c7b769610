"""Precise BatchNorm statistics with PaddleVideo's semantics, as an mmengine hook.

PaddleVideo (``utils/precise_bn.py``, ``tasks/train.py``) recomputes BN statistics before
validation on 0-based epochs ``e % interval == 0`` and on the last epoch: the model in train
mode, no gradients, ``min(num_iters, len(train_loader))`` batches of the *training* loader
(with its augmentation and mixup), and every running statistic set to the plain average of
the per-batch statistics. mmpretrain's ``PreciseBNHook`` differs in when it runs (after epochs
interval, 2*interval, ...), in skipping mixup and in how it counts samples, hence this hook.

Unlike Paddle, where each GPU keeps its own statistics, the averages are all-reduced so every
rank holds the same numbers (and N processes equal one process that saw all their batches).
"""
import itertools
import logging

import torch
from mmaction.registry import HOOKS
from mmengine.dist import all_gather_object, all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch.nn.modules.batchnorm import _BatchNorm

from ovkit.engine.skips import SKIP_KEY, _split

__all__ = ['PaddlePreciseBNHook', 'update_bn_stats']


@torch.no_grad()
def update_bn_stats(model, batches, num_iters, forward):
    """Set each training-mode BN's running stats to the mean of its per-batch statistics.

    Args:
        model: module whose BatchNorm layers in training mode are updated.
        batches: iterable of batches.
        num_iters: number of batches to use; fewer available raises an error.
        forward: ``forward(batch)`` runs the model on one batch.

    Returns:
        int: the number of BatchNorm layers updated.
    """
    bns = [m for m in model.modules()
           if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    if not bns:
        return 0
    saved = [(bn.momentum, bn.num_batches_tracked.clone()) for bn in bns]
    means = [torch.zeros_like(bn.running_mean) for bn in bns]
    variances = [torch.zeros_like(bn.running_var) for bn in bns]
    for bn in bns:
        bn.momentum = 1.0  # torch convention: the running stat becomes the batch stat
    count = 0
    try:
        for count, batch in enumerate(itertools.islice(batches, num_iters), 1):
            forward(batch)
            for i, bn in enumerate(bns):
                means[i] += (bn.running_mean - means[i]) / count
                variances[i] += (bn.running_var - variances[i]) / count
    finally:
        for bn, (momentum, tracked) in zip(bns, saved):
            bn.momentum = momentum
            bn.num_batches_tracked.copy_(tracked)
    if count != num_iters:
        raise RuntimeError(f'precise BN: expected {num_iters} batches, the loader gave {count}.')
    if get_world_size() > 1:
        for tensor in means + variances:
            all_reduce(tensor, op='mean')
    for bn, mean, var in zip(bns, means, variances):
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    return len(bns)


@HOOKS.register_module()
class PaddlePreciseBNHook(Hook):
    """Recompute BN statistics on training batches before validation, as PaddleVideo does.

    Runs after training epoch e (0-based) when ``e % interval == 0`` or e is the last epoch,
    before validation and checkpointing (priority ABOVE_NORMAL).

    Args:
        num_iters: batches per rank (Paddle ``num_iters_preciseBN``), capped by the loader length.
        interval: epoch interval (Paddle ``preciseBN_interval``).
        with_mixup: apply the data preprocessor's training blending (mixup), as Paddle does.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, num_iters=200, interval=5, with_mixup=True):
        if num_iters < 1 or interval < 1:
            raise ValueError('PaddlePreciseBNHook: num_iters and interval must be >= 1 '
                             f'(custom_hooks), got {num_iters} and {interval}.')
        self.num_iters = num_iters
        self.interval = interval
        self.with_mixup = with_mixup

    def _due(self, runner):
        epoch = runner.epoch  # the loop increments it only after the after_train_epoch hooks
        return epoch % self.interval == 0 or epoch == runner.max_epochs - 1

    def after_train_epoch(self, runner):
        """Recompute the statistics when this epoch is one Paddle would use."""
        if not self._due(runner):
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        loader = runner.train_dataloader
        num_iters = min(self.num_iters, len(loader))
        was_training = model.training
        model.train()

        drawn, skipped = [0], []

        def forward(data):
            # This loop reads the training loader outside the train loop, so the records of
            # samples that failed to load (ovkit.engine.skips: replaced by others) are taken
            # out and counted here, not by SkipBadSamplesHook.
            records = data.pop(SKIP_KEY, None) if isinstance(data, dict) else None
            if records is not None:
                items = [r for recs in records for r in _split(recs)]
                drawn[0] += len(records) + len(items)
                skipped.extend(items)
            data = model.data_preprocessor(data, training=self.with_mixup)
            model(**data, mode='tensor')

        print_log(f'precise BN: {num_iters} batches per rank after epoch {runner.epoch + 1}',
                  logger='current')
        updated = update_bn_stats(model, iter(loader), num_iters, forward)
        print_log(f'precise BN: updated {updated} BatchNorm layers', logger='current')
        self._report_skips(drawn[0], skipped)
        model.train(was_training)

    @staticmethod
    def _report_skips(drawn, skipped):
        """Warn (rank 0, summed over ranks) about the samples that failed to load in this pass;
        returns ``(skipped, drawn)`` over all ranks."""
        local = (drawn, skipped)
        parts = all_gather_object(local) if get_world_size() > 1 else [local]
        total = sum(p[0] for p in parts)
        names = [n for p in parts for n in p[1]]
        if names:
            print_log(f'precise BN: {len(names)} of {total} samples failed to load and were '
                      f'replaced by others: {"; ".join(list(dict.fromkeys(names))[:5])}',
                      logger='current', level=logging.WARNING)
        return len(names), total
