"""The family contract of docs/architecture.md, checked on the whole package.

Each check is first shown to catch a planted violation, then run on ovkit itself.
"""
import glob
import os.path as osp
import subprocess
import sys
import textwrap

import pytest

from tests import contract_checks as cc
from tests.conftest import REPO

HEAVY = ('torch', 'numpy', 'mmengine', 'mmcv', 'mmdet', 'mmaction', 'mmpretrain', 'open_clip')


def _python(code):
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


# --------------------------------------------------------------------------- layering
def test_cross_family_import_is_caught(tmp_path):
    pkg = tmp_path / 'ovkit'
    for sub in ('sgg', 'baron', 'clip'):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / '__init__.py').write_text('')
    (pkg / 'sgg' / 'ok.py').write_text('from ovkit.clip import build_clip\nfrom . import ok\n')
    (pkg / 'sgg' / 'bad.py').write_text('import os\nfrom ovkit.baron.kd import BaronKD\n')
    (pkg / 'sgg' / 'bad_rel.py').write_text('from ..baron import kd\n')
    (pkg / 'clip' / 'bad.py').write_text('from .. import baron\n')
    problems = cc.cross_family_imports(str(pkg))
    assert len(problems) == 3, problems
    assert any('sgg/bad.py:2 imports ovkit.baron.kd' in p for p in problems)
    assert any('sgg/bad_rel.py:1' in p for p in problems)
    assert any('clip/bad.py:1' in p and 'clip must not import family baron' in p
               for p in problems)


def test_no_family_imports_another():
    assert cc.cross_family_imports() == []


# --------------------------------------------------------------------------- import ovkit
def test_import_ovkit_is_light_and_registers_nothing():
    out = _python(f"""
        import sys
        import ovkit
        heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})
        print(heavy)
        from tests import contract_checks as cc
        cc.populate_hosts()  # every host module imported, ovkit's families not
        print(cc.ovkit_registrations())
    """)
    heavy, registered = out.strip().splitlines()[-2:]
    assert heavy == '[]', f'import ovkit imported {heavy}'
    assert registered == '[]', f'import ovkit registered {registered}'


# --------------------------------------------------------------------------- registries
@pytest.fixture(scope='module')
def registries():
    import ovkit
    cc.populate_hosts()
    ovkit.register_all_modules()
    return cc.host_registries()


def test_registry_clash_is_caught(registries):
    from mmpretrain.registry import MODELS
    fake = type('FasterRCNN', (), {'__module__': 'ovkit.fake'})
    MODELS.register_module(name='FasterRCNN', module=fake)  # mmdet has this name
    try:
        problems = cc.registry_clashes(registries)
        assert any("'FasterRCNN'" in p and 'mmdet already has' in p for p in problems)
    finally:
        MODELS.module_dict.pop('FasterRCNN')


def test_every_ovkit_name_is_unique_across_hosts(registries):
    registered = cc.ovkit_registrations(registries)
    assert len(registered) >= 10  # the families are really registered
    assert cc.registry_clashes(registries) == []


def test_every_ovkit_name_resolves_under_its_host_scope(registries):
    assert cc.unresolvable_under_scope(registries) == []


def test_families_register_under_their_host(registries):
    expected = {'baron': 'mmdet', 'sgg': 'mmdet', 'pptsm': 'mmaction', 'vit': 'mmpretrain'}
    for host, attr, name, obj in cc.ovkit_registrations(registries):
        family = obj.__module__.split('.')[1]
        if family in expected and family != 'vit':  # ViT also registers as an mmaction frame
            assert host == expected[family], f'{obj.__module__}.{name} registered in {host}'


# --------------------------------------------------------------------------- configs
def _configs():
    return sorted(p for p in glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True)
                  if '_base_' not in p.split(osp.sep))


def _walk(node, key):
    """Every value stored under ``key`` anywhere in a nested config."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _walk(v, key)


def _known_class_lists():
    from ovkit.metadata import class_names, shipped_names
    from ovkit.shapes import SHAPE_CLASSES
    lists = {name: class_names(name) for name in shipped_names()
             if name.endswith('.txt') and 'template' not in name}
    lists['ovkit.shapes.SHAPE_CLASSES'] = tuple(SHAPE_CLASSES)
    return lists


@pytest.mark.parametrize('path', _configs(), ids=lambda p: osp.relpath(p, REPO))
def test_config_builds_its_scope_and_class_list(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    assert cfg.get('default_scope') in ('mmdet', 'mmaction', 'mmpretrain'), path
    imports = cfg.get('custom_imports', {}).get('imports', [])
    assert any(i == 'ovkit' or i.startswith('ovkit.') for i in imports), path
    known = _known_class_lists()
    class_lists = {tuple(m['classes']) for m in _walk(cfg, 'metainfo')
                   if isinstance(m, dict) and m.get('classes')}
    for classes in class_lists:  # every list is a shipped one, never a drifted copy
        assert classes in known.values(), (
            f'{path}: metainfo.classes {classes[:4]}... matches no list of ovkit.metadata or '
            'ovkit.shapes; read it from there instead of restating it')
    if len(class_lists) == 1:
        (classes,) = class_lists
        for key in ('bbox_head', 'mask_head'):
            for head in _walk(cfg.get('model', {}), key):
                heads = head if isinstance(head, list) else [head]
                for h in heads:
                    if isinstance(h, dict) and 'num_classes' in h:
                        assert h['num_classes'] == len(classes), (path, key, h['num_classes'])
