# mmdet's own runtime (default_scope 'mmdet', hooks, visualiser, logging) plus ovkit's compat
# fixes: with no GPU, multi-process runs use gloo and CPU DDP (ovkit.compat.distributed).
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['ovkit', 'ovkit.engine'], allow_failed_imports=False)
# ovkit.engine (docs/reliability.md): checkpoints written atomically, and in each one the random
# state, data position and non-persistent buffers of every rank, so `--resume` after a kill
# continues bit-identically. Off: default_hooks.exact_resume.enabled=False.
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    exact_resume=dict(type='ExactResumeHook'))
