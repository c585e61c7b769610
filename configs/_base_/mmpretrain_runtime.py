# mmpretrain's own runtime (default_scope 'mmpretrain') plus ovkit's compat fixes (gloo and CPU
# DDP where no GPU is present).
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['ovkit'], allow_failed_imports=False)
