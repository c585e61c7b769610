"""The one-command install: pins, idempotence, the stack it promises."""
import importlib.metadata as md
import os
import os.path as osp
import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_second_make_install_does_nothing():
    # make test depends on install, so the stamp is fresh here: a second install is a no-op.
    venv = osp.dirname(osp.dirname(sys.executable))
    if not osp.isfile(osp.join(venv, '.ovkit-installed')):
        pytest.skip(f'{venv} was not made by `make install`; not installing into it')
    proc = subprocess.run(['make', '-C', REPO, 'install', f'VENV={venv}'], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'install.sh' not in proc.stdout, proc.stdout


def test_stack_versions_match_requirements():
    pins = {}
    for name in ('mminstall.txt', 'torch.txt'):
        with open(osp.join(REPO, 'requirements', name)) as f:
            for line in f:
                line = line.split('#')[0].strip()
                if '==' in line:
                    pkg, ver = line.split('==')
                    pins[pkg] = ver
    assert pins['mmcv'] == '2.1.0' and pins['mmdet'] == '3.3.0'
    for pkg, ver in pins.items():
        if pkg in ('torch', 'torchvision'):
            continue  # a compatible torch that was already present is respected
        assert md.version(pkg) == ver, pkg


def test_torch_pair_and_mmcv_ops_work():
    proc = subprocess.run([sys.executable, osp.join(REPO, 'tools', 'install', 'check_torch.py')])
    assert proc.returncode == 0
    import torch
    from mmcv.ops import nms, roi_align
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    dets, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feat = torch.arange(16.).view(1, 1, 4, 4)
    out = roi_align(feat, torch.tensor([[0., 0., 0., 4., 4.]]), (1, 1), 1.0, 2, 'avg', True)
    # The mean of the whole 4x4 map, sampled at 2x2 bilinear points: computed by hand.
    assert abs(out.item() - feat.mean().item()) < 1e-5


def test_wheel_ships_metadata_and_resolver_finds_it(tmp_path):
    """A wheel install (no checkout) finds the shipped class lists and templates."""
    import glob
    import zipfile
    proc = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                           '--no-build-isolation', '-q', '-w', str(tmp_path / 'dist'), REPO],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = glob.glob(str(tmp_path / 'dist' / 'ovkit-*.whl'))
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ('coco_ov_65.txt', 'lvis_v1_1203.txt', 'prompt_templates.txt'):
        assert f'ovkit/metadata/{shipped}' in names
    site = tmp_path / 'site'
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                           '--target', str(site), wheel], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    code = ('import ovkit; from ovkit.metadata import class_names, metadata_path; '
            "print(ovkit.__file__); print(len(class_names('coco_ov_65.txt'))); "
            "print(metadata_path('prompt_templates.txt'))")
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(site)), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    init, count, templates = proc.stdout.split()
    assert init.startswith(str(site)) and templates.startswith(str(site))  # not the checkout
    assert count == '65'


def test_disk_check_names_the_folder_and_the_need(tmp_path):
    """The install's early disk check: passes with room, fails clearly without (a new venv's
    folder does not exist yet, so its nearest existing parent is measured)."""
    import shutil
    script = osp.join(REPO, 'tools', 'install', 'check_disk.py')
    venv = tmp_path / 'not' / 'yet' / '.venv'
    ok = subprocess.run([sys.executable, script, str(venv), '0.001'], capture_output=True,
                        text=True)
    assert ok.returncode == 0 and ok.stderr == ''
    free = shutil.disk_usage(tmp_path).free / 2**30
    need = free * 2 + 1  # more than this filesystem has
    bad = subprocess.run([sys.executable, script, str(venv), str(need), 'the test install'],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert 'not enough disk space for the test install' in bad.stderr
    assert str(tmp_path) in bad.stderr and f'{need:g} GiB needed' in bad.stderr
    # the free figure printed is this filesystem's (to 0.1 GiB, other writers aside)
    printed = float(bad.stderr.split(': ')[1].split(' GiB free')[0])
    assert abs(printed - free) < 0.5
    typo = subprocess.run([sys.executable, script, str(venv), '8G'], capture_output=True,
                          text=True)
    assert typo.returncode == 2 and "number of GiB (OVKIT_NEED_GIB), got '8G'" in typo.stderr


def test_install_stops_on_a_full_disk_before_creating_anything(tmp_path):
    # OVKIT_NEED_GIB stands in for a full disk: more than any filesystem here has free.
    venv = tmp_path / 'venv'
    proc = subprocess.run(['bash', osp.join(REPO, 'tools', 'install', 'install.sh')],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, VENV=str(venv), OVKIT_NEED_GIB='1e9'))
    assert proc.returncode == 1
    assert f'not enough disk space for the ovkit install into {venv}' in proc.stderr
    assert not venv.exists()  # nothing was created or copied
