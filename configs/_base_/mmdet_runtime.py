# mmdet's own runtime (default_scope 'mmdet', hooks, visualiser, logging) plus ovkit's compat
# fixes: with no GPU, multi-process runs use gloo and CPU DDP (ovkit.compat.distributed).
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['ovkit'], allow_failed_imports=False)
