"""Temporal shift against Paddle's formula written element by element."""
import numpy as np
import pytest
import torch

from ovkit.pptsm.shift import shift_folds, temporal_shift, temporal_shift_reference


def paddle_formula(x, num_segments, ratio):
    """out[t, :c1] = x[t-1], out[t, c1:c2] = x[t+1], else x[t]; zero outside the clip."""
    nt, c = x.shape[:2]
    c1 = int(np.float32(c) * np.float32(ratio))
    c2 = int(np.float32(2 * c) * np.float32(ratio))
    out = torch.zeros_like(x)
    for n in range(nt // num_segments):
        for t in range(num_segments):
            row = n * num_segments + t
            for ch in range(c):
                if ch < c1:
                    src = t - 1
                elif ch < c2:
                    src = t + 1
                else:
                    src = t
                if 0 <= src < num_segments:
                    out[row, ch] = x[n * num_segments + src, ch]
    return out


@pytest.mark.parametrize('num_segments,channels', [(8, 16), (4, 10), (3, 7), (2, 4), (1, 3)])
def test_matches_paddle_formula(num_segments, channels):
    x = torch.randn(2 * num_segments, channels, 3, 2, dtype=torch.float64)
    expected = paddle_formula(x, num_segments, 1.0 / num_segments)
    assert torch.equal(temporal_shift(x, num_segments), expected)
    assert torch.equal(temporal_shift_reference(x, num_segments), expected)


def test_directions_and_zero_padding_explicitly():
    # T = 4, C = 8: fold 0 = channels 0-1 come from the previous frame, fold 1 = 2-3 from the
    # next one; frame t holds the value t + 1 everywhere.
    x = torch.arange(1, 5, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 8, 1, 1).clone()
    out = temporal_shift(x, 4)[:, :, 0, 0]
    assert out[:, 0].tolist() == [0, 1, 2, 3]  # from t-1, zero at t=0
    assert out[:, 2].tolist() == [2, 3, 4, 0]  # from t+1, zero at t=T-1
    assert out[:, 5].tolist() == [1, 2, 3, 4]  # unshifted
    # The opposite of mmaction2's TemporalShift, whose first fold comes from t+1.


def test_folds_use_float32_like_paddle():
    assert shift_folds(64, 1 / 8) == (8, 16)
    assert shift_folds(2048, 1 / 8) == (256, 512)
    assert shift_folds(10, 1 / 4) == (2, 5)
    assert shift_folds(3, 1.0) == (3, 3)  # T = 1: both folds cover everything, clipped


def test_gradient_is_the_adjoint_and_matches_autograd_of_reference():
    x = torch.randn(16, 12, 3, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(16, 12, 3, 3, dtype=torch.float64)
    gx, = torch.autograd.grad(temporal_shift(x, 8), x, g)
    gr, = torch.autograd.grad(temporal_shift_reference(x, 8), x, g)
    assert torch.equal(gx, gr)
    y = torch.randn_like(x)
    lhs = (temporal_shift(y, 8) * g).sum()
    rhs = (y * gx).sum()  # <S y, g> = <y, S^T g>
    assert torch.allclose(lhs, rhs)
    assert torch.autograd.gradcheck(lambda v: temporal_shift(v, 4),
                                    (torch.randn(8, 8, 2, 2, dtype=torch.float64,
                                                 requires_grad=True), ))


def test_channels_last_and_non_contiguous_inputs():
    x = torch.randn(8, 16, 5, 5)
    expected = temporal_shift_reference(x, 8)
    xc = x.contiguous(memory_format=torch.channels_last)
    out = temporal_shift(xc, 8)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, expected)
    xs = torch.randn(8, 16, 5, 10)[..., ::2]
    assert torch.equal(temporal_shift(xs, 8), temporal_shift_reference(xs, 8))


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match='multiple of num_segments'):
        temporal_shift(torch.randn(6, 8, 2, 2), 4)
    with pytest.raises(ValueError, match=r'\[N\*T, C, H, W\]'):
        temporal_shift(torch.randn(8, 8, 2), 8)
    assert temporal_shift(torch.randn(0, 8, 2, 2), 8).shape == (0, 8, 2, 2)
