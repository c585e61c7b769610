"""tools/data/make_ov_splits.py on tiny synthetic COCO / LVIS jsons, and the shipped class lists."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from ovkit.metadata import metadata_path
from tests.conftest import REPO

TOOL = osp.join(REPO, 'tools', 'data', 'make_ov_splits.py')

from ovkit.baron import ov_splits as mos  # noqa: E402  (the tool's logic; TOOL runs it)

# The OVR-CNN novel split, as published (Zareian et al. 2021; used by BARON, Detic, ViLD...).
STANDARD_NOVEL = ['airplane', 'bus', 'cat', 'dog', 'cow', 'elephant', 'umbrella', 'tie',
                  'snowboard', 'skateboard', 'cup', 'knife', 'cake', 'couch', 'keyboard', 'sink',
                  'scissors']


def _names(fname):
    with open(metadata_path(fname)) as f:
        return [s.strip() for s in f if s.strip() and not s.startswith('#')]


def test_shipped_ov_coco_lists_are_the_standard_split():
    coco80, all65 = _names('coco_80.txt'), _names('coco_ov_65.txt')
    base, novel = _names('coco_ov_48_base.txt'), _names('coco_ov_17_novel.txt')
    assert (len(coco80), len(all65), len(base), len(novel)) == (80, 65, 48, 17)
    assert sorted(novel) == sorted(STANDARD_NOVEL)
    assert not set(base) & set(novel) and set(base) | set(novel) == set(all65)
    # All in COCO order, so row index = mmdet label index for every list.
    for lst in (all65, base, novel):
        assert lst == [n for n in coco80 if n in lst]


def _coco_json(path, n_images=12):
    """80 COCO categories with non-contiguous ids and a known, varied set of annotations."""
    names = _names('coco_80.txt')
    cats = [dict(id=3 * i + 2, name=n, supercategory='x') for i, n in enumerate(names)]
    images = [dict(id=100 + k, file_name=f'{k:012d}.jpg', width=64, height=48)
              for k in range(n_images)]
    anns, aid = [], 0
    for k, im in enumerate(images):
        for j in range(k % 4):  # image 0, 4, 8: no annotation at all
            cat = cats[(7 * k + 11 * j) % 80]
            aid += 1
            anns.append(dict(id=aid, image_id=im['id'], category_id=cat['id'], iscrowd=0,
                             bbox=[1, 2, 10, 8], area=80))
    data = dict(info=dict(year=2017), licenses=[], images=images, annotations=anns,
                categories=cats)
    with open(path, 'w') as f:
        json.dump(data, f)
    return data


def test_coco_split_counts_and_content(tmp_path):
    ann = tmp_path / 'instances_train2017.json'
    src = _coco_json(ann)
    res = mos.coco_ov_split(str(ann), str(tmp_path / 'out'), keep_empty_images=False)
    base_names, novel_names = set(_names('coco_ov_48_base.txt')), set(STANDARD_NOVEL)
    name_of = {c['id']: c['name'] for c in src['categories']}
    src_base = [a for a in src['annotations'] if name_of[a['category_id']] in base_names]
    src_novel = [a for a in src['annotations'] if name_of[a['category_id']] in novel_names]
    assert src_base and src_novel and len(src_base) + len(src_novel) < len(src['annotations'])

    base = json.load(open(tmp_path / 'out' / 'instances_train2017_ov_base.json'))
    full = json.load(open(tmp_path / 'out' / 'instances_train2017_ov_all.json'))
    # Every base annotation kept, unchanged; no novel or non-OV one left.
    assert base['annotations'] == src_base
    assert full['annotations'] == [a for a in src['annotations']
                                   if name_of[a['category_id']] in base_names | novel_names]
    # Images: only those still annotated (when asked to drop the rest), in the original order.
    assert [im['id'] for im in base['images']] == [
        im['id'] for im in src['images'] if im['id'] in {a['image_id'] for a in src_base}]
    assert len(full['images']) == len({a['image_id'] for a in full['annotations']})
    # 65 categories with the original ids, in coco_ov_65 order, each with its split.
    for out in (base, full):
        assert [c['name'] for c in out['categories']] == _names('coco_ov_65.txt')
        assert all(c['id'] == src['categories'][_names('coco_80.txt').index(c['name'])]['id']
                   for c in out['categories'])
        assert {c['name'] for c in out['categories'] if c['split'] == 'novel'} == novel_names
        assert {c['name'] for c in out['categories'] if c['split'] == 'base'} == base_names
        assert out['info'] == src['info']
    assert res['base'] == dict(path=str(tmp_path / 'out' / 'instances_train2017_ov_base.json'),
                               images=len(base['images']), annotations=len(src_base),
                               per_split={'base': len(src_base)})
    assert res['all']['per_split'] == {'base': len(src_base), 'novel': len(src_novel)}


def test_coco_keeps_every_image_by_default_and_only(tmp_path):
    """BARON's KD batch trains on images with novel objects only, and OV-COCO is evaluated on
    all 5000 val images: the default keeps every image, as the reference's files do."""
    ann = tmp_path / 'instances_val2017.json'
    src = _coco_json(ann)
    res = mos.coco_ov_split(str(ann), str(tmp_path), only=('all',))
    assert list(res) == ['all'] and not (tmp_path / 'instances_val2017_ov_base.json').exists()
    out = json.load(open(res['all']['path']))
    assert out['images'] == src['images']


def test_cli_prints_counts(tmp_path):
    _coco_json(tmp_path / 'a.json')
    proc = subprocess.run([sys.executable, TOOL, 'coco', '--ann', str(tmp_path / 'a.json'),
                           '--out-dir', str(tmp_path / 'o'), '--drop-empty-images'],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    base = json.load(open(tmp_path / 'o' / 'a_ov_base.json'))
    n = len(base['annotations'])
    assert len(base['images']) == len({a['image_id'] for a in base['annotations']})
    assert 'a_ov_base.json: ' in proc.stdout
    assert f'{n} annotations (base {n}, novel 0)' in proc.stdout


def _lvis_json(path):
    freqs = ['f', 'c', 'r', 'c', 'r', 'f']
    cats = [dict(id=10 + i, name=f'thing{i}', synset=f'thing{i}.n.01', frequency=fr)
            for i, fr in enumerate(freqs)]
    images = [dict(id=i + 1, width=32, height=32, coco_url=f'http://x/{i}.jpg',
                   neg_category_ids=[12, 15], not_exhaustive_category_ids=[14])
              for i in range(5)]
    anns = [dict(id=k + 1, image_id=k % 5 + 1, category_id=10 + k % 6, bbox=[0, 0, 4, 4], area=16,
                 segmentation=[[0, 0, 4, 0, 4, 4, 0, 4]]) for k in range(23)]
    data = dict(info={}, images=images, annotations=anns, categories=cats)
    with open(path, 'w') as f:
        json.dump(data, f)
    return data


def test_lvis_norare(tmp_path):
    src = _lvis_json(tmp_path / 'lvis_v1_train.json')
    res = mos.lvis_norare(str(tmp_path / 'lvis_v1_train.json'), str(tmp_path / 'out'))
    out = json.load(open(tmp_path / 'out' / 'lvis_v1_train_norare.json'))
    rare = {12, 14}
    kept = [a for a in src['annotations'] if a['category_id'] not in rare]
    assert out['annotations'] == kept  # no rare annotation left, every c/f one kept
    assert len(kept) == 23 - 8  # categories 12 and 14 get k % 6 in {2, 4}: 4 + 4 of 23
    assert out['images'] == src['images']
    assert {c['id']: c['split'] for c in out['categories']} == {
        10: 'base', 11: 'base', 12: 'novel', 13: 'base', 14: 'novel', 15: 'base'}
    assert res['removed'] == 8 and res['annotations'] == 15 and res['images'] == 5
    # category info of the kept annotations, by id: what the OV-LVIS class weights read
    info = json.load(open(res['cat_info']))
    assert [c['id'] for c in info] == [10, 11, 12, 13, 14, 15]
    for c in info:
        mine = [a for a in kept if a['category_id'] == c['id']]
        assert c['instance_count'] == len(mine)
        assert c['image_count'] == len({a['image_id'] for a in mine})
    assert [c['image_count'] > 0 for c in info] == [True, True, False, True, False, True]


# ------------------------------------------------------------------------- clear errors
def test_missing_file(tmp_path):
    with pytest.raises(mos.SplitError, match=r"--ann '.*nope\.json' not found.*cocodataset"):
        mos.coco_ov_split(str(tmp_path / 'nope.json'), str(tmp_path))
    with pytest.raises(SystemExit, match=r"make_ov_splits: error: --ann '.*nope\.json' not found"):
        mos.main(['lvis', '--ann', str(tmp_path / 'nope.json'), '--out-dir', str(tmp_path)])


def test_json_without_categories(tmp_path):
    path = tmp_path / 'captions.json'
    path.write_text(json.dumps(dict(images=[], annotations=[])))
    with pytest.raises(mos.SplitError, match=r"captions\.json' has no 'categories' list"):
        mos.coco_ov_split(str(path), str(tmp_path))
    with pytest.raises(mos.SplitError, match=r"captions\.json' has no 'categories' list"):
        mos.lvis_norare(str(path), str(tmp_path))


def test_class_missing_from_json(tmp_path):
    path = tmp_path / 'inst.json'
    data = _coco_json(path)
    data['categories'] = [c for c in data['categories'] if c['name'] != 'cup']
    path.write_text(json.dumps(data))
    with pytest.raises(mos.SplitError, match=r"inst\.json' has no category named \['cup'\] "
                                             r"\(from '.*coco_ov_65\.txt'\)"):
        mos.coco_ov_split(str(path), str(tmp_path / 'o'))
    assert not (tmp_path / 'o').exists()


def test_novel_list_not_subset(tmp_path):
    _coco_json(tmp_path / 'inst.json')
    novel = tmp_path / 'novel.txt'
    novel.write_text('cat\nunicorn\n')
    with pytest.raises(mos.SplitError, match=r"novel\.txt' names \['unicorn'\]"):
        mos.coco_ov_split(str(tmp_path / 'inst.json'), str(tmp_path), novel_file=str(novel))


def test_lvis_category_without_frequency(tmp_path):
    path = tmp_path / 'lvis.json'
    data = _lvis_json(path)
    del data['categories'][3]['frequency']
    path.write_text(json.dumps(data))
    with pytest.raises(mos.SplitError, match=r"lvis\.json': categories\[3\] \(thing3\) has "
                                             r"frequency None"):
        mos.lvis_norare(str(path), str(tmp_path))
