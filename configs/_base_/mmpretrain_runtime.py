# mmpretrain's own runtime (default_scope 'mmpretrain') plus ovkit's compat fixes (gloo and CPU
# DDP where no GPU is present).
_base_ = 'mmpretrain::_base_/default_runtime.py'
# ovkit.engine (issue 8): corrupt or missing samples skipped and counted (the run stops past 1%),
# a NaN/inf loss stops training naming the iteration and term. Opt out per config with
# default_hooks = dict(bad_samples=None) / dict(nonfinite_loss=None).
custom_imports = dict(imports=['ovkit', 'ovkit.engine'], allow_failed_imports=False)
default_hooks = dict(
    bad_samples=dict(type='SkipBadSamplesHook', max_skip_ratio=0.01),
    nonfinite_loss=dict(type='NonFiniteLossHook'))
