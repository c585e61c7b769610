"""The mmaction2 1.2.0 wheel and sdist ship without ``mmaction/models/localizers/drn``
although ``localizers/__init__.py`` imports it, so ``import mmaction.models`` (and every build
under ``default_scope='mmaction'``) fails. We serve a stand-in module whose DRN fails with a
clear message when built; everything else in mmaction works."""
import importlib.util
import os.path as osp


def drn_missing():
    """True when mmaction is installed without its DRN localizer (found without importing)."""
    spec = importlib.util.find_spec('mmaction')
    if spec is None or not spec.submodule_search_locations:
        return False
    root = list(spec.submodule_search_locations)[0]
    return not osp.isdir(osp.join(root, 'models', 'localizers', 'drn'))


def provide_drn(hooks):
    if not drn_missing():
        return
    stub = osp.join(osp.dirname(__file__), 'mmaction_drn_stub.py')
    hooks.replacements['mmaction.models.localizers.drn'] = (stub, True)
    hooks.replacements['mmaction.models.localizers.drn.drn'] = (stub, False)
