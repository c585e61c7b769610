"""Stand-in for ``mmaction.models.localizers.drn`` (missing from the mmaction2 1.2.0 wheel).

Served by :mod:`ovkit.compat.mmaction_drn` so that ``import mmaction.models`` works. Building
DRN itself fails with a message that says how to get the real module.
"""
from mmaction.registry import MODELS
from torch import nn


class DRN(nn.Module):
    """Placeholder: the mmaction2 1.2.0 wheel does not ship DRN's source."""

    def __init__(self, *args, **kwargs):
        raise ImportError(
            'mmaction.models.localizers.drn is missing from the mmaction2 1.2.0 wheel, so ovkit '
            'serves a stand-in. To use DRN install mmaction2 from its git repository '
            '(pip install "git+https://github.com/open-mmlab/mmaction2.git@v1.2.0").')


# Registered under the real name, so a config that asks for DRN gets the message above. This
# file serves both `...localizers.drn` and `...drn.drn`, hence the guard.
if 'DRN' not in MODELS.module_dict:
    MODELS.register_module(module=DRN)
