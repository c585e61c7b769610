"""FIFO feature queue with image ids, the source of BARON's extra contrastive negatives."""
import torch
import torch.nn as nn

__all__ = ['FeatureQueue']


class FeatureQueue(nn.Module):
    """A fixed-capacity FIFO of L2-normalised features, each tagged with its image id.

    Stored newest first in two buffers, ``feats`` [length, dim] and ``ids`` [length] (-1 marks an
    empty slot, so image ids must be >= 0). The buffers are *non-persistent*: they follow the
    module across devices but stay out of checkpoints, because they cache features of a
    model that has since moved on, they are per-process (mmengine wraps DDP with
    ``broadcast_buffers=False``), and a resumed run refills them within a few iterations.
    """

    def __init__(self, length, dim):
        super().__init__()
        if not (isinstance(length, int) and length >= 0):
            raise ValueError(f'queue length must be an int >= 0, got {length!r}')
        if not (isinstance(dim, int) and dim > 0):
            raise ValueError(f'queue dim must be a positive int, got {dim!r}')
        self.length = length
        self.dim = dim
        self.register_buffer('feats', torch.zeros(length, dim), persistent=False)
        self.register_buffer('ids', torch.full((length,), -1, dtype=torch.long),
                             persistent=False)

    def __len__(self):
        return int((self.ids >= 0).sum())

    def get(self):
        """(feats [n, dim], ids [n]) of the filled slots, newest first.

        Copies: a loss that used them saves them for backward, and the next :meth:`push`
        (before that backward) overwrites the buffers in place.
        """
        n = len(self)
        return self.feats[:n].clone(), self.ids[:n].clone()

    @torch.no_grad()
    def push(self, feats, ids):
        """Put ``feats`` [n, dim] in front; the oldest entries fall off the end.

        When n exceeds the capacity only the first ``length`` rows are kept.
        """
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f'expected features [n, {self.dim}], got {tuple(feats.shape)}')
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.ids.device).reshape(-1)
        if ids.shape[0] != feats.shape[0]:
            raise ValueError(f'{feats.shape[0]} features but {ids.shape[0]} ids')
        if (ids < 0).any():
            raise ValueError('image ids must be >= 0 (-1 marks an empty queue slot)')
        n = min(feats.shape[0], self.length)
        if n == 0:
            return
        self.feats.copy_(torch.cat([feats[:n].detach().to(self.feats),
                                    self.feats[:self.length - n]]))
        self.ids.copy_(torch.cat([ids[:n], self.ids[:self.length - n]]))

    def extra_repr(self):
        return f'length={self.length}, dim={self.dim}'
