"""PaddleVideo's ``CustomWarmupCosineDecay`` as an mmengine parameter scheduler.

mmengine has the cosine part (``CosineAnnealingLR``) but no linear warmup that ends on the
cosine curve: chaining ``LinearLR`` multiplies the two schedules and is ~1.6% off during
warmup. Paddle's rule, with e = iteration / iterations_per_epoch (fractional epochs), is

    c(e) = base * (cos(pi * e / E) + 1) / 2
    lr(e) = s + e * (c(w) - s) / w   if e < w   else   c(e)

for base lr ``base``, warmup start ``s``, warmup epochs ``w`` and total epochs ``E``.
"""
import math

from mmaction.registry import PARAM_SCHEDULERS
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler

__all__ = ['PaddleWarmupCosineLR', 'paddle_warmup_cosine_lr']


def paddle_warmup_cosine_lr(epoch, base_lr, warmup_start_lr, warmup_epochs, max_epochs):
    """Paddle's ``CustomWarmupCosineDecay.get_lr`` at a (fractional) epoch, same operations.

    Args:
        epoch: fractional epoch e.
        base_lr: ``cosine_base_lr``.
        warmup_start_lr: ``warmup_start_lr``.
        warmup_epochs: ``warmup_epochs``.
        max_epochs: ``max_epoch``.
    """
    lr = base_lr * (math.cos(math.pi * epoch / max_epochs) + 1.0) * 0.5
    if epoch < warmup_epochs:
        lr_end = base_lr * (math.cos(math.pi * warmup_epochs / max_epochs) + 1.0) * 0.5
        alpha = (lr_end - warmup_start_lr) / warmup_epochs
        lr = epoch * alpha + warmup_start_lr
    return lr


@PARAM_SCHEDULERS.register_module()
class PaddleWarmupCosineLR(_ParamScheduler):
    """Linear warmup into a cosine decay, per iteration, exactly as PaddleVideo.

    Use it epoch-based with ``convert_to_iter_based=True`` (the PP-TSM recipe: Paddle's
    ``iter_step: True``): the lr then changes every iteration with e = iter / len(loader).
    The param group holding the optimizer's own ``lr`` follows the formula exactly; groups
    with a multiplier (TSM's fc x5 / x10) follow it scaled by their initial ratio, as Paddle's
    per-parameter learning-rate multipliers do.

    Args:
        optimizer: wrapped optimizer (filled in by the runner).
        warmup_start_lr: lr at e = 0 (Paddle ``warmup_start_lr``), for the base lr.
        warmup_epochs: warmup length w in epochs.
        max_epochs: cosine period E in epochs; None takes ``end`` (the runner's max_epochs).
        base_lr: ``cosine_base_lr``; None takes the optimizer's ``lr``.
        begin: first epoch (or iteration) at which the scheduler acts.
        end: epoch (or iteration) at which it stops.
        last_step: last step index, for resuming without a state dict.
        by_epoch: whether ``begin``/``end``/the lengths count epochs.
        epoch_length: iterations per epoch, set by ``build_iter_from_epoch``.
        verbose: print every update.
    """

    def __init__(self,
                 optimizer,
                 warmup_start_lr,
                 warmup_epochs,
                 max_epochs=None,
                 base_lr=None,
                 begin=0,
                 end=INF,
                 last_step=-1,
                 by_epoch=True,
                 epoch_length=1,
                 verbose=False):
        if max_epochs is None:
            if end == INF:
                raise ValueError('PaddleWarmupCosineLR: set max_epochs (Paddle max_epoch) or '
                                 'end in param_scheduler.')
            max_epochs = (end - begin) / epoch_length
        if not 0 <= warmup_epochs <= max_epochs:
            raise ValueError(f'PaddleWarmupCosineLR: warmup_epochs={warmup_epochs} must lie in '
                             f'[0, max_epochs={max_epochs}] (param_scheduler).')
        inner = getattr(optimizer, 'optimizer', optimizer)
        self.base_lr = inner.defaults['lr'] if base_lr is None else base_lr
        if not self.base_lr > 0:
            raise ValueError(f'PaddleWarmupCosineLR: base lr must be positive, got {self.base_lr}')
        self.warmup_start_lr = warmup_start_lr
        self.warmup_epochs = warmup_epochs
        self.max_epochs = max_epochs
        self.epoch_length = epoch_length
        super().__init__(optimizer, 'lr', begin=begin, end=end, last_step=last_step,
                         by_epoch=by_epoch, verbose=verbose)

    @classmethod
    def build_iter_from_epoch(cls, *args, begin=0, end=INF, by_epoch=True, epoch_length=None,
                              **kwargs):
        """Build the per-iteration scheduler from an epoch-based config."""
        if not by_epoch:
            raise ValueError('PaddleWarmupCosineLR: convert_to_iter_based needs by_epoch=True.')
        if not epoch_length or epoch_length <= 0:
            raise ValueError(f'PaddleWarmupCosineLR: epoch_length must be positive, got '
                             f'{epoch_length} (is the training dataloader empty?)')
        if kwargs.get('max_epochs') is None and end != INF:
            kwargs['max_epochs'] = end - begin
        begin = int(begin * epoch_length)
        if end != INF:
            end = int(end * epoch_length)
        return cls(*args, begin=begin, end=end, by_epoch=False, epoch_length=epoch_length,
                   **kwargs)

    def _get_value(self):
        epoch = self.last_step / self.epoch_length
        lr = paddle_warmup_cosine_lr(epoch, self.base_lr, self.warmup_start_lr,
                                     self.warmup_epochs, self.max_epochs)
        return [lr if base == self.base_lr else base / self.base_lr * lr
                for base in self.base_values]
