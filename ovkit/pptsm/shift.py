"""Temporal shift with PaddlePaddle's semantics (``paddle.nn.functional.temporal_shift``).

For an input ``[N*T, C, H, W]`` and ``shift_ratio`` r (PP-TSM uses 1/T), Paddle computes
``c1 = int(C * r)`` and ``c2 = int(2 * C * r)`` in float32 and returns

    out[t, :c1]   = x[t - 1, :c1]     (zero at t = 0)
    out[t, c1:c2] = x[t + 1, c1:c2]   (zero at t = T - 1)
    out[t, c2:]   = x[t, c2:]

mmaction2's ``TemporalShift.shift`` moves the two folds the *opposite* way and fixes the fold
at C // 8, so its weights and Paddle's are not interchangeable; this op is written by hand.

It is also faster than mmaction2's concat-based shift: the forward writes each output element
once into a preallocated tensor (five slice copies, no temporaries) and the backward is the
same kernel with the directions swapped, where autograd through slicing and ``torch.cat``
would materialise several full-size zero tensors and sum them.
"""
import numpy as np
import torch

__all__ = ['temporal_shift', 'temporal_shift_reference', 'shift_folds']


def shift_folds(channels, shift_ratio):
    """Channel boundaries ``(c1, c2)`` exactly as Paddle's kernel computes them (float32).

    Args:
        channels: number of channels C.
        shift_ratio: fraction of channels in each shifted fold.

    Returns:
        tuple: ``(c1, c2)`` clipped to ``channels``.
    """
    ratio = np.float32(shift_ratio)
    c1 = int(np.float32(channels) * ratio)
    c2 = int(np.float32(channels * 2) * ratio)
    return min(c1, channels), min(c2, channels)


def _shift_into(out, x, num_segments, c1, c2, reverse):
    """Write the shift of ``x`` into ``out`` (both ``[N*T, C, H, W]``, same memory format)."""
    nt, c, h, w = x.shape
    if x.is_contiguous() and out.is_contiguous():
        # [N, T, C*H*W]: every fold of every frame is one contiguous run, so each copy below
        # is a handful of large memcpys (5-d views make TensorIterator loop far slower).
        hw = h * w
        xv = x.view(nt // num_segments, num_segments, c * hw)
        ov = out.view(nt // num_segments, num_segments, c * hw)
        c1, c2 = c1 * hw, c2 * hw
    else:  # channels_last or strided input: index channels on their own axis
        xv = x.view(nt // num_segments, num_segments, c, h, w)
        ov = out.view(nt // num_segments, num_segments, c, h, w)
    # Forward: fold 0 comes from t-1, fold 1 from t+1. The adjoint swaps the two directions.
    back, fwd = (slice(c1, c2), slice(0, c1)) if reverse else (slice(0, c1), slice(c1, c2))
    if num_segments > 1:
        ov[:, 1:, back].copy_(xv[:, :-1, back])
        ov[:, :-1, fwd].copy_(xv[:, 1:, fwd])
    ov[:, 0, back].zero_()
    ov[:, -1, fwd].zero_()
    ov[:, :, c2:].copy_(xv[:, :, c2:])
    return out


class _TemporalShift(torch.autograd.Function):
    """Autograd function whose backward is the reverse shift (the exact adjoint)."""

    @staticmethod
    def forward(ctx, x, num_segments, c1, c2):
        ctx.shift_args = (num_segments, c1, c2)
        return _shift_into(torch.empty_like(x), x, num_segments, c1, c2, reverse=False)

    @staticmethod
    def backward(ctx, grad_out):
        num_segments, c1, c2 = ctx.shift_args
        grad_in = _shift_into(torch.empty_like(grad_out), grad_out, num_segments, c1, c2,
                              reverse=True)
        return grad_in, None, None, None


def temporal_shift(x, num_segments, shift_ratio=None):
    """Shift channel folds along time with Paddle's directions and zero padding.

    Args:
        x: tensor ``[N*T, C, H, W]`` whose batch is grouped in clips of ``num_segments`` frames.
        num_segments: number of frames T per clip.
        shift_ratio: fraction of channels per shifted fold; ``None`` means 1/T as in PP-TSM.

    Returns:
        Tensor: the shifted tensor, same shape and memory format as ``x``.
    """
    if x.dim() != 4:
        raise ValueError(f'temporal_shift expects [N*T, C, H, W], got shape {tuple(x.shape)}')
    if x.shape[0] % num_segments:
        raise ValueError(f'temporal_shift: batch {x.shape[0]} is not a multiple of '
                         f'num_segments={num_segments}; feed whole clips of T frames.')
    ratio = 1.0 / num_segments if shift_ratio is None else shift_ratio
    c1, c2 = shift_folds(x.shape[1], ratio)
    if x.shape[0] == 0:
        return x.clone()
    return _TemporalShift.apply(x, num_segments, c1, c2)


def temporal_shift_reference(x, num_segments, shift_ratio=None):
    """Paddle's formula written directly (pad in time, then slice), for tests.

    Mirrors the pad-and-slice path of PaddleVideo's ``BottleneckBlock.forward``.

    Args:
        x: tensor ``[N*T, C, H, W]``.
        num_segments: number of frames T per clip.
        shift_ratio: fraction of channels per shifted fold; ``None`` means 1/T.
    """
    ratio = 1.0 / num_segments if shift_ratio is None else shift_ratio
    nt, c, h, w = x.shape
    c1, c2 = shift_folds(c, ratio)
    xr = x.reshape(-1, num_segments, c, h, w)
    pad = torch.nn.functional.pad(xr, (0, 0, 0, 0, 0, 0, 1, 1))  # [N, T+2, C, H, W]
    out = torch.cat([pad[:, :num_segments, :c1], pad[:, 2:num_segments + 2, c1:c2],
                     pad[:, 1:num_segments + 1, c2:]], dim=2)
    return out.reshape(nt, c, h, w)
