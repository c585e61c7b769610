"""Multi-process runs on a machine without a GPU.

mmengine's pytorch launcher calls ``torch.cuda.set_device(local_rank)`` unconditionally and
configs ask for nccl, so `dist_train.sh CONFIG 2` dies on a machine without a GPU. Without
CUDA we skip set_device and use gloo. The DDP wrapper is then given
``device_ids=[local_rank]``, which torch rejects for a CPU module: drop it there. SyncBatchNorm
has no CPU kernel, and mmengine reverts it to BatchNorm only in non-distributed runs, so a
SyncBN config (e.g. configs/baron/coco.py) launched on CPU processes gets plain BatchNorm too
(per-process statistics), with a warning.

Every launch through mmengine's pytorch launcher (CPU or GPU) also gets ovkit's worker life
cycle (:mod:`ovkit.engine.process`): a parent-death signal, and the process groups destroyed
at exit, which ends the ``terminate called without an active exception`` abort of gloo runs.

Applied lazily: each patch runs when its mmengine module is first imported.
"""
import warnings


def _other_accelerator():
    from mmengine.device import is_mlu_available, is_musa_available, is_npu_available
    return is_mlu_available() or is_npu_available() or is_musa_available()


def patch_launcher(dist_utils):
    """Patch ``mmengine.dist.utils._init_dist_pytorch`` (gloo, no set_device without CUDA;
    worker life cycle everywhere)."""
    if getattr(dist_utils._init_dist_pytorch, '_ovkit', False):
        return
    original_init = dist_utils._init_dist_pytorch

    def _init_dist_pytorch(backend, init_backend='torch', **kwargs):
        import torch
        import torch.distributed as torch_dist

        # Workers die with their launcher, and destroy their process groups at exit (the
        # gloo exit abort): see ovkit.engine.process.
        from ovkit.engine import process
        process.before_init_process_group()
        if torch.cuda.is_available() or init_backend != 'torch' or _other_accelerator():
            original_init(backend, init_backend=init_backend, **kwargs)
        else:
            if backend != 'gloo':
                warnings.warn(
                    f'ovkit: no CUDA device, using the gloo backend instead of {backend}')
            torch_dist.init_process_group(backend='gloo', **kwargs)
        process.after_init_process_group()

    _init_dist_pytorch._ovkit = True
    dist_utils._init_dist_pytorch = _init_dist_pytorch


def patch_ddp_wrapper(wrappers_distributed):
    """Patch ``MMDistributedDataParallel.__init__`` for modules that live on the CPU."""
    ddp_cls = wrappers_distributed.MMDistributedDataParallel
    if getattr(ddp_cls.__init__, '_ovkit', False):
        return
    original_ddp_init = ddp_cls.__init__

    def ddp_init(self, module, detect_anomalous_params=False, **kwargs):
        import torch
        on_cpu = all(p.device.type == 'cpu' for p in module.parameters())
        if on_cpu and kwargs.get('device_ids') is not None:
            kwargs['device_ids'] = None
            kwargs['output_device'] = None
        if on_cpu and any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules()):
            from mmengine.model import revert_sync_batchnorm
            warnings.warn('ovkit: SyncBatchNorm needs a GPU; using BatchNorm in this CPU '
                          'distributed run')
            module = revert_sync_batchnorm(module)
        original_ddp_init(self, module, detect_anomalous_params=detect_anomalous_params, **kwargs)

    ddp_init._ovkit = True
    ddp_cls.__init__ = ddp_init
