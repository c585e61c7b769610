"""Exit 0 if the environment has a torch/torchvision pair ovkit can use, else 1.

"Compatible" means: torch >= 2.1 and a torchvision that imports against it (open_clip needs
torchvision; a mismatched pair fails at import, which is how 2.13.0+cpu breaks here).
"""
import sys

try:
    import torch
    import torchvision  # noqa: F401
    from torchvision.ops import nms  # compiled ops load only for a matching pair
    nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
except Exception as exc:  # noqa: BLE001 - any failure means "install the tested pair"
    print(f'[ovkit] no usable torch/torchvision pair: {type(exc).__name__}: {exc}')
    sys.exit(1)

major, minor = (int(x) for x in torch.__version__.split('.')[:2])
if (major, minor) < (2, 1):
    print(f'[ovkit] torch {torch.__version__} is older than 2.1')
    sys.exit(1)
