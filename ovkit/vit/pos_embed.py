"""Position-embedding resampling with timm's method (written here so ovkit needs no timm)."""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def resample_abs_pos_embed(posemb: torch.Tensor,
                           new_size: Sequence[int],
                           old_size: Optional[Sequence[int]] = None,
                           num_prefix_tokens: int = 1,
                           interpolation: str = 'bicubic',
                           antialias: bool = True) -> torch.Tensor:
    """Resample a ``[1, prefix + H*W, D]`` position table to a new patch grid.

    Same result as timm's ``layers.pos_embed.resample_abs_pos_embed``: prefix tokens
    (class, distillation) are kept, the grid is interpolated in float32 (bicubic with
    antialias for state dicts; timm's JAX loader uses bilinear without antialias).

    Args:
        posemb: position table ``[1, L, D]``.
        new_size: target grid ``(h, w)``.
        old_size: grid of ``posemb``; square when None.
        num_prefix_tokens: leading tokens that are not part of the grid.
        interpolation: ``F.interpolate`` mode.
        antialias: ``F.interpolate`` antialias flag.
    """
    new_size = tuple(int(s) for s in new_size)
    num_grid = posemb.shape[1] - num_prefix_tokens
    if old_size is None:
        side = int(math.sqrt(num_grid))
        if side * side != num_grid:
            raise ValueError(f'cannot infer a square grid from {num_grid} position tokens '
                             f'({posemb.shape[1]} minus {num_prefix_tokens} prefix tokens)')
        old_size = (side, side)
    old_size = tuple(int(s) for s in old_size)
    if old_size == new_size:
        return posemb
    prefix, grid = posemb[:, :num_prefix_tokens], posemb[:, num_prefix_tokens:]
    dim, dtype = posemb.shape[-1], posemb.dtype
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_size, mode=interpolation, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)
    return torch.cat([prefix, grid], dim=1) if num_prefix_tokens else grid
