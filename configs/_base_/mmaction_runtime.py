# mmaction2's own runtime (default_scope 'mmaction') plus ovkit's compat fixes: the mmaction2
# 1.2.0 wheel's missing DRN module, gloo and CPU DDP where no GPU is present.
_base_ = 'mmaction::_base_/default_runtime.py'
custom_imports = dict(imports=['ovkit', 'ovkit.engine'], allow_failed_imports=False)
# ovkit.engine (docs/reliability.md):
# - checkpoints written atomically, and in each one the random state, data position and
#   non-persistent buffers of every rank, so `--resume` after a kill continues bit-identically
#   (off: default_hooks.exact_resume.enabled=False);
# - corrupt or missing samples skipped and counted, the run stopped past 1% of them
#   (default_hooks.bad_samples.max_skip_ratio; off: default_hooks = dict(bad_samples=None));
# - a NaN/inf loss stops training naming the iteration and the term
#   (off: default_hooks = dict(nonfinite_loss=None)).
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook'),
    exact_resume=dict(type='ExactResumeHook'),
    bad_samples=dict(type='SkipBadSamplesHook', max_skip_ratio=0.01),
    nonfinite_loss=dict(type='NonFiniteLossHook'))
