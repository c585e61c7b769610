# mmaction2's own runtime (default_scope 'mmaction') plus ovkit's compat fixes: the mmaction2
# 1.2.0 wheel's missing DRN module, gloo and CPU DDP where no GPU is present.
_base_ = 'mmaction::_base_/default_runtime.py'
custom_imports = dict(imports=['ovkit', 'ovkit.engine'], allow_failed_imports=False)
# ovkit.engine (docs/reliability.md): checkpoints written atomically, and in each one the random
# state, data position and non-persistent buffers of every rank, so `--resume` after a kill
# continues bit-identically. Off: default_hooks.exact_resume.enabled=False.
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    exact_resume=dict(type='ExactResumeHook'))
