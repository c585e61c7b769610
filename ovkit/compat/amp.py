"""``--amp`` on a machine without a GPU.

mmengine's AmpOptimWrapper asserts a CUDA/NPU/MLU device and scales losses for fp16. On a CPU
the useful mixed precision is bf16 autocast, which has fp32's exponent range and needs no
loss scaling, so this wrapper only adds the autocast context to the plain OptimWrapper.
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class OVKitCPUAmpOptimWrapper(OptimWrapper):
    """OptimWrapper whose forward runs under CPU autocast (bf16 by default)."""

    def __init__(self, dtype='bfloat16', **kwargs):
        super().__init__(**kwargs)
        self.cast_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if self.cast_dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f'OVKitCPUAmpOptimWrapper: dtype must be bfloat16 or float16, '
                             f'got {dtype}')

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield
