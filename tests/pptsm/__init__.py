# ovkit.compat must be applied before anything imports mmaction.models (the mmaction2 1.2.0
# wheel lacks a module that ovkit provides); test modules import mmaction at the top.
import ovkit  # noqa: F401
