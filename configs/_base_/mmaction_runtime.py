# mmaction2's own runtime (default_scope 'mmaction') plus ovkit's compat fixes: the mmaction2
# 1.2.0 wheel's missing DRN module, gloo and CPU DDP where no GPU is present.
_base_ = 'mmaction::_base_/default_runtime.py'
custom_imports = dict(imports=['ovkit'], allow_failed_imports=False)
