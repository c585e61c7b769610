"""lvis 0.5.3 ``LVISEval.accumulate`` calls ``astype(dtype=np.float)``, removed in numpy 1.24.

Only ``lvis.eval`` gets a numpy whose ``float`` exists; numpy itself is untouched.
"""
import types


class _NumpyWithFloat(types.ModuleType):
    """numpy as lvis 0.5.3 expects it: ``np.float`` is ``float``."""
    float = float

    def __getattr__(self, name):
        import numpy
        return getattr(numpy, name)


def fix_lvis_eval(module):
    module.np = _NumpyWithFloat('numpy')
