"""Bad-input corpus, preflight rows: each damaged copy of the shapes data gives exactly one
problem naming the config key, the path, what is wrong and the fix (in one process; the
launchers run the same function, see test_bad_inputs.py)."""
import copy
import os
import os.path as osp
import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config

from ovkit.engine import preflight
from ovkit.engine.preflight import RESUME_AUTO, RESUME_LAST, PreflightError
from tests.conftest import REPO
from tests.engine import damage

FRCNN = osp.join(REPO, 'configs', 'shapes', 'faster_rcnn_tiny.py')
BARON = osp.join(REPO, 'configs', 'baron', 'shapes.py')
TRAIN_ANN = 'train_dataloader.dataset.ann_file'
MAKE_SHAPES = 'python tools/data/make_shapes.py --out data/shapes'


@pytest.fixture(scope='module')
def frcnn_cfg():
    return Config.fromfile(FRCNN)


@pytest.fixture(scope='module')
def baron_cfg():
    cfg = Config.fromfile(BARON)
    # The shapes workspace has no trained shapes CLIP (configs/baron/shapes.py's demo CLIP):
    # these checks use the random tiny CLIP and a class-embeddings file written below.
    cfg.model.clip_cfg = dict(model_name='tiny', seed=0)
    cfg.cls_embeddings_path = 'data/shapes/baron/shapes_tiny_clip.npy'
    cfg.model.roi_head.bbox_head.cls_embeddings_path = cfg.cls_embeddings_path
    return cfg


@pytest.fixture
def ws(shapes_workspace, tmp_path, monkeypatch):
    """A fresh copy of the shapes workspace to damage; the current directory."""
    damage.copy_workspace(shapes_workspace, tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def problems(cfg, **kwargs):
    return preflight.check(copy.deepcopy(cfg), **kwargs)[0]


def only(found, key):
    assert len(found) == 1, '\n'.join(map(str, found))
    assert found[0].key == key, str(found[0])
    return found[0]


def test_clean_data_has_no_problem(ws, frcnn_cfg):
    found, checked = preflight.check(copy.deepcopy(frcnn_cfg))
    assert found == [] and checked >= 4  # roots, prefixes, annotation files
    assert problems(frcnn_cfg, mode='test', checkpoint=None) == []


def test_missing_data_root_is_one_message_with_the_fix(ws, frcnn_cfg):
    shutil.rmtree(ws / damage.COCO)
    p = only(problems(frcnn_cfg), 'train_dataloader.dataset.data_root')
    assert p.path == 'data/shapes/coco/' and 'not found' in p.what
    assert MAKE_SHAPES in p.fix
    text = str(PreflightError([p]))
    assert text.count('\n') == 0 and 'data_root' in text and MAKE_SHAPES in text


@pytest.mark.parametrize('how, expected', [
    ('truncate', 'not valid JSON at line 1 column'),
    ('empty', 'empty file (0 bytes)'),
    ('random', 'not JSON'),
    ('list', 'not a COCO annotation file (CocoDataset needs'),
])
def test_broken_annotation_json(ws, frcnn_cfg, how, expected):
    path = ws / damage.TRAIN_JSON
    {'truncate': damage.truncate, 'empty': lambda p: damage.truncate(p, 0),
     'random': damage.random_bytes, 'list': lambda p: open(p, 'w').write('[1, 2]')}[how](path)
    p = only(problems(frcnn_cfg), TRAIN_ANN)
    assert p.path.endswith('annotations/train.json') and expected in p.what
    assert MAKE_SHAPES in p.fix


@pytest.mark.parametrize('edit, expected', [
    (lambda d: d.update(images=[], annotations=[]), 'lists no images'),
    (lambda d: d.update(annotations=[]), 'has no annotations: nothing to train on'),
    (lambda d: [c.update(name=c['name'].upper()) for c in d['categories']],
     "none of the config's 8 class names is a category"),
    (lambda d: [a.update(bbox=[0, 0, -1, 5]) for a in d['annotations']],
     'none of its'),
    (lambda d: [a.pop('area') for a in d['annotations'][:2]],
     'annotations without "area"'),
    (lambda d: [a.update(id=1) for a in d['annotations'][:3]], 'ids are used more than once'),
])
def test_annotations_mmdet_cannot_use(ws, frcnn_cfg, edit, expected):
    damage.edit_json(ws / damage.TRAIN_JSON, edit)
    p = only(problems(frcnn_cfg), TRAIN_ANN)
    assert expected in p.what, p.what


def test_wrong_image_folder(ws, frcnn_cfg):
    os.rename(ws / damage.COCO / 'train', ws / damage.COCO / 'elsewhere')
    p = only(problems(frcnn_cfg), 'train_dataloader.dataset.data_prefix.img')
    assert 'not found' in p.what
    (ws / damage.COCO / 'train').mkdir()
    (ws / damage.COCO / 'train' / 'other.png').write_bytes(b'x')
    p = only(problems(frcnn_cfg), 'train_dataloader.dataset.data_prefix.img')
    assert 'none of the first 20 images listed in' in p.what and '000001.png' in p.what


def test_unreadable_annotation_file(ws, frcnn_cfg):
    if os.geteuid() == 0:
        pytest.skip('root reads any file')
    os.chmod(ws / damage.TRAIN_JSON, 0)
    assert 'not readable' in only(problems(frcnn_cfg), TRAIN_ANN).what


# --------------------------------------------------------------------------- arrays
def _embeddings(ws, rows=8, dim=64, nan_row=None):
    array = np.random.default_rng(0).normal(size=(rows, dim)).astype(np.float32)
    if nan_row is not None:
        array[nan_row, 5] = np.nan
    path = ws / 'data' / 'shapes' / 'baron' / 'shapes_tiny_clip.npy'
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


@pytest.mark.parametrize('kwargs, expected', [
    (dict(), None),
    (dict(rows=7), 'has 7 rows but num_classes=8'),
    (dict(dim=32), 'has 32-d rows but CLIP tiny gives 64-d region embeddings'),
    (dict(nan_row=3), 'holds NaN/inf in 1 of its 8 rows (first: row 3)'),
])
def test_class_embeddings(ws, baron_cfg, kwargs, expected):
    _embeddings(ws, **kwargs)
    found = problems(baron_cfg)
    if expected is None:
        assert found == []
        return
    p = only(found, 'model.roi_head.bbox_head.cls_embeddings_path')
    assert expected in p.what and p.path.endswith('shapes_tiny_clip.npy')
    assert 'gen_class_embeddings.py' in p.fix or 'gen_class_embeddings.py' in p.what


def test_nan_embeddings_refused_at_load(ws):
    from ovkit.baron.bbox_head import load_cls_embeddings
    from ovkit.engine.guards import NonFiniteArrayError
    path = _embeddings(ws, nan_row=6)
    with pytest.raises(NonFiniteArrayError, match=r"cls_embeddings_path='.*shapes_tiny_clip"
                       r"\.npy' holds NaN/inf in 1 of its 8 rows \(first: row 6"):
        load_cls_embeddings(str(path), 8)
    array = np.load(path)
    array[6] = 1.0
    np.save(path, array)
    assert load_cls_embeddings(str(path), 8).shape == (8, 64)


# --------------------------------------------------------------------------- checkpoints
def _checkpoint(path):
    torch.save({'meta': {}, 'state_dict': {'w': torch.ones(3)}}, path)
    return str(path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('damage_it, expected', [
    (lambda p: open(p, 'w').write('see iter_40.pth\n'), "a text file, not a checkpoint"),
    (lambda p: damage.truncate(p, 0), 'empty file (0 bytes)'),
    (damage.truncate, 'truncated ('),
    (lambda p: damage.random_bytes(p, 300), 'not a torch checkpoint'),
])
def test_broken_checkpoints(ws, frcnn_cfg, damage_it, expected):
    path = _checkpoint(ws / 'model.pth')
    damage_it(path)
    p = only(problems(frcnn_cfg, mode='test', checkpoint=path), 'CHECKPOINT')
    assert expected in p.what and 'tools/train.py' in p.fix
    cfg = copy.deepcopy(frcnn_cfg)
    cfg.load_from = path
    assert expected in only(problems(cfg), 'load_from').what


def test_checkpoint_with_an_arbitrary_global_runs_nothing(ws, frcnn_cfg):
    marker = ws / 'executed'
    path = ws / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'meta': _Evil(str(marker))}, path)
    p = only(problems(frcnn_cfg, mode='test', checkpoint=str(path)), 'CHECKPOINT')
    assert 'safe (weights-only) loading refuses' in p.what and 'system' in p.what
    with pytest.raises(Exception, match='Weights only load failed'):
        torch.load(path, weights_only=True)  # what mmengine's loader does under ovkit.compat
    assert not marker.exists()


def test_missing_pretrained_backbone(ws, frcnn_cfg):
    cfg = copy.deepcopy(frcnn_cfg)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint='checkpoints/r18.pth')
    p = only(problems(cfg), 'model.backbone.init_cfg.checkpoint')
    assert 'not found' in p.what and 'init_cfg=None' in p.fix


def test_resume(ws, frcnn_cfg):
    cfg = copy.deepcopy(frcnn_cfg)
    cfg.work_dir = str(ws / 'work')
    p = only(problems(cfg, resume=RESUME_LAST), '--resume')
    assert 'nothing to resume' in p.what and '--resume auto' in p.fix
    assert problems(cfg, resume=RESUME_AUTO) == []  # asked for: start from scratch
    os.makedirs(cfg.work_dir)
    with open(osp.join(cfg.work_dir, 'last_checkpoint'), 'w') as f:
        f.write(str(ws / 'work' / 'iter_20.pth'))
    assert 'not found' in only(problems(cfg, resume=RESUME_AUTO), '--resume ('
                               + osp.join(cfg.work_dir, 'last_checkpoint') + ')').what
    good = _checkpoint(ws / 'work' / 'iter_20.pth')
    assert problems(cfg, resume=RESUME_LAST) == [] == problems(cfg, resume=good)
    assert 'not found' in only(problems(cfg, resume='nope.pth'), '--resume').what


def test_several_problems_one_line_each(ws, frcnn_cfg):
    damage.truncate(ws / damage.TRAIN_JSON)
    shutil.rmtree(ws / damage.COCO / 'val')
    err = pytest.raises(PreflightError, preflight.run, copy.deepcopy(frcnn_cfg),
                        config_file='x.py').value
    lines = str(err).splitlines()
    assert lines[0] == 'x.py: 2 problems stop the run:'
    assert {p.key for p in err.problems} == {TRAIN_ANN,
                                            'val_dataloader.dataset.data_prefix.img'}
    assert len(lines) == 3 and all('Fix:' in line for line in lines[1:])


def test_family_declaration_is_one_line(ws, frcnn_cfg, tmp_path):
    """A family that lands later declares its own key; the preflight then checks it."""
    key = 'ovkit_test_vocab_file'
    preflight.declare_input(key, kind='text', fix='write {path}: one name per line')
    try:
        cfg = copy.deepcopy(frcnn_cfg)
        cfg.model[key] = 'vocab.txt'
        p = only(problems(cfg), f'model.{key}')
        assert p.fix == 'write vocab.txt: one name per line'
        open('vocab.txt', 'w').write('\n\n')
        assert 'no non-empty line' in only(problems(cfg), f'model.{key}').what
        open('vocab.txt', 'w').write('cat\n')
        assert problems(cfg) == []
    finally:
        preflight._INPUTS.pop((__name__, key))


def test_a_key_two_families_declare_follows_the_config_imports():
    """PP-TSM and ViT both declare ``backbone.pretrained``: each config gets its own family's
    check and fix, whatever was imported last (the whole test suite imports both)."""
    import ovkit.pptsm.inputs  # noqa: F401
    import ovkit.vit.inputs  # noqa: F401
    for family in ('ovkit.pptsm', 'ovkit.vit'):
        spec = preflight.declared_inputs([family])['backbone.pretrained']
        assert spec.family == family
        cfg = dict(custom_imports=dict(imports=['ovkit', family]))
        assert preflight.config_families(cfg) == [family]
    assert preflight.declared_inputs()['backbone.pretrained'].family in ('ovkit.pptsm',
                                                                         'ovkit.vit')


def test_coco_report_counts_what_mmdet_drops(ws, frcnn_cfg):
    """Second, independent count: the instances mmdet's own CocoDataset keeps."""
    from mmdet.registry import DATASETS

    from ovkit.engine import sanity

    def edit(data):
        anns = data['annotations']
        anns[0]['bbox'][2] = -4.0                          # negative width
        anns[1]['bbox'][0] = float('nan')                  # NaN coordinate
        anns[2]['category_id'] = 99                        # not in categories
        anns[3]['bbox'] = [500.0, 500.0, 10.0, 10.0]       # outside the 128x128 image
        anns[4]['bbox'][3] = 0.5                           # under a pixel
    data = damage.edit_json(ws / damage.TRAIN_JSON, edit)
    report = sanity.check_coco(data, 'train.json', frcnn_cfg.metainfo['classes'])
    assert report.errors == []
    assert dict(report.dropped) == {'degenerate': 2, 'non_finite': 1, 'unknown_category': 1,
                                    'outside': 1}
    ds = DATASETS.build(dict(copy.deepcopy(frcnn_cfg.train_dataloader.dataset), pipeline=[],
                             filter_cfg=None))
    kept = sum(len(ds.get_data_info(i)['instances']) for i in range(len(ds)))
    assert kept == report.usable == len(data['annotations']) - 5
    assert problems(frcnn_cfg) == []  # counted and dropped, not an error
