"""Import hooks: serve a stand-in for a missing module, or run a fix right after a module loads.

Lazy on purpose: ``import ovkit`` must not import torch, mmengine, lvis or mmaction just to
patch them. A fix registered with :func:`after_import` runs when (and if) its module is first
imported, or at once when it is already loaded.
"""
import importlib.abc
import importlib.util
import sys


class ImportHooks(importlib.abc.MetaPathFinder):
    """A meta-path finder holding module replacements and post-import fixes."""

    def __init__(self):
        self.replacements = {}  # module name -> (path of our file, is_package)
        self.post_hooks = {}  # module name -> [fn(module)]
        self._resolving = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.replacements:
            file, is_pkg = self.replacements[fullname]
            return importlib.util.spec_from_file_location(
                fullname, file, submodule_search_locations=[] if is_pkg else None)
        if fullname not in self.post_hooks or fullname in self._resolving:
            return None
        self._resolving.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._resolving.discard(fullname)
        if spec is None or spec.loader is None:
            return spec
        hooks, exec_module = self.post_hooks.pop(fullname), spec.loader.exec_module

        def exec_and_fix(module):
            exec_module(module)
            for hook in hooks:
                hook(module)

        spec.loader.exec_module = exec_and_fix
        return spec

    def after_import(self, name, hook):
        """Run ``hook(module)`` once ``name`` is imported (now, if it already is)."""
        if name in sys.modules:
            hook(sys.modules[name])
        else:
            self.post_hooks.setdefault(name, []).append(hook)

    def install(self):
        if self not in sys.meta_path:
            sys.meta_path.insert(0, self)


HOOKS = ImportHooks()
