"""Checks of the family contract (docs/architecture.md), used by ``tests/test_contract.py``.

Each returns a list of problems (empty when the contract holds), so a test can also show that
it detects a planted violation.
"""
import ast
import importlib
import os
import os.path as osp
from typing import Dict, List, Tuple

OVKIT_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'ovkit')

# Method families: each may import only itself and the shared packages below.
FAMILIES = ('baron', 'sgg', 'pptsm', 'vit', 'accuracy')
SHARED = ('clip', 'compat', 'engine', 'metadata', 'shapes', 'tools')
# The host toolboxes whose registries ovkit registers into (mmengine is every host's root).
HOSTS = ('mmengine', 'mmdet', 'mmaction', 'mmpretrain')


def _imported_modules(path: str, package: str) -> List[Tuple[int, str]]:
    """(line, absolute module name) of every import in a file of ``package``."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.split('.')
                base = base[:len(base) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
                found.append((node.lineno, name))
                if not node.module:  # `from .. import sgg`
                    found += [(node.lineno, f'{name}.{a.name}') for a in node.names]
            elif node.module:
                found.append((node.lineno, node.module))
    return found


def cross_family_imports(root: str = OVKIT_DIR) -> List[str]:
    """Imports that break the layering, as 'file:line imports module' strings.

    A family may import itself and the shared packages; a shared package may import no family
    (``register_all_modules`` imports families by name at run time, which is allowed).

    Args:
        root: the ``ovkit`` package folder to scan.
    """
    problems = []
    for dirpath, _, files in os.walk(root):
        rel = osp.relpath(dirpath, osp.dirname(root))
        package = rel.replace(os.sep, '.')
        parts = package.split('.')
        owner = parts[1] if len(parts) > 1 else None
        for name in sorted(files):
            if not name.endswith('.py'):
                continue
            path = osp.join(dirpath, name)
            pkg = package if name == '__init__.py' else package
            for line, module in _imported_modules(path, pkg):
                mparts = module.split('.')
                if mparts[0] != 'ovkit' or len(mparts) < 2 or mparts[1] not in FAMILIES:
                    continue
                if owner in FAMILIES and mparts[1] == owner:
                    continue
                problems.append(f'{osp.relpath(path, osp.dirname(root))}:{line} imports '
                                f'{module} ({owner or "ovkit"} must not import family '
                                f'{mparts[1]})')
    return problems


def host_registries() -> Dict[str, Dict[str, object]]:
    """{host: {registry attribute name: Registry}} for every registry each host defines."""
    from mmengine.registry import Registry
    found = {}
    for host in HOSTS:
        module = importlib.import_module(f'{host}.registry')
        found[host] = {name: value for name, value in vars(module).items()
                       if isinstance(value, Registry)}
    return found


def populate_hosts():
    """Import every host's modules so their registries hold all of their own names."""
    import ovkit  # noqa: F401  (the mmaction2 wheel needs ovkit.compat to import)
    for host in HOSTS[1:]:
        importlib.import_module(f'{host}.utils').register_all_modules(init_default_scope=False)


def ovkit_registrations(registries=None) -> List[Tuple[str, str, str, type]]:
    """(host, registry attribute, name, class) of every module ovkit registered."""
    registries = registries or host_registries()
    found = []
    for host, regs in registries.items():
        for attr, registry in regs.items():
            for name, obj in registry.module_dict.items():
                if getattr(obj, '__module__', '').startswith('ovkit'):
                    found.append((host, attr, name, obj))
    return found


def registry_clashes(registries=None) -> List[str]:
    """Names ovkit registered that another host registry of the same kind also holds.

    A host (or mmengine) name that ovkit reuses would be shadowed, or shadow ovkit's class,
    depending on the default scope: a config would silently build the wrong module.

    Args:
        registries: the result of :func:`host_registries` (computed when None).
    """
    registries = registries or host_registries()
    problems = []
    for host, attr, name, obj in ovkit_registrations(registries):
        kind = registries[host][attr].name
        for other_host, regs in registries.items():
            for other_attr, other in regs.items():
                if other.name != kind or (other_host, other_attr) == (host, attr):
                    continue
                held = other.module_dict.get(name)
                if held is not None and held is not obj:
                    problems.append(f'{host}.{attr}: ovkit {obj.__module__}.{obj.__name__} '
                                    f'registered as {name!r}, which {other_host} already has '
                                    f'({held.__module__}.{held.__name__})')
    return problems


def unresolvable_under_scope(registries=None) -> List[str]:
    """ovkit names that do not resolve to ovkit's class under their host's default scope.

    Args:
        registries: the result of :func:`host_registries` (computed when None).
    """
    from mmengine.registry import DefaultScope
    registries = registries or host_registries()
    problems = []
    for host, attr, name, obj in ovkit_registrations(registries):
        scope = registries[host][attr].scope
        with DefaultScope.overwrite_default_scope(scope):
            got = registries[host][attr].get(name)
        if got is not obj:
            problems.append(f'{host}.{attr}[{name!r}] under scope {scope!r} resolves to {got!r}, '
                            f'not ovkit\'s {obj.__module__}.{obj.__name__}')
    return problems
