"""sgg_infer: SGB's custom-image JSON files, pictures, skipped images; the SGB sorting rule."""
import json
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.runner.checkpoint import save_checkpoint
from PIL import Image

from ovkit.sgg.infer import (
    inference_pipeline,
    list_images,
    main,
    sgb_custom_prediction,
    top_triplets,
)
from tests.sgg.model_helpers import NUM_CLASSES, NUM_PREDICATES, build_in_mmdet_scope, sgg_model_cfg

CLASSES = tuple(f'c{i}' for i in range(NUM_CLASSES))
PREDICATES = ('__background__', ) + tuple(f'r{i}' for i in range(NUM_PREDICATES))
DATA_FIELDS = {'idx_to_files', 'ind_to_classes', 'ind_to_predicates'}
PRED_FIELDS = {'bbox', 'bbox_labels', 'bbox_scores', 'rel_pairs', 'rel_labels', 'rel_scores',
               'rel_all_scores'}


def test_sgb_sorting_and_pair_remapping_by_hand():
    boxes = np.array([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], float)
    scores = np.array([0.2, 0.9, 0.2])            # tie between 0 and 2: higher index first
    pairs = np.array([[0, 1], [1, 2], [2, 0]])
    rel = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    out = sgb_custom_prediction(boxes, np.array([3, 1, 2]), scores, pairs, rel)
    assert out['bbox_scores'] == [0.9, 0.2, 0.2]
    assert out['bbox_labels'] == [1, 2, 3]          # boxes 1, 2, 0
    assert out['bbox'] == [boxes[1].tolist(), boxes[2].tolist(), boxes[0].tolist()]
    # relations by best foreground probability: rows 1 (0.8), 2 (0.7), 0 (0.3)
    assert out['rel_scores'] == [0.8, 0.7, 0.3]
    assert out['rel_labels'] == [2, 1, 1]
    assert out['rel_pairs'] == [[0, 1], [1, 2], [2, 0]]  # old (1,2), (2,0), (0,1) remapped
    assert out['rel_all_scores'][0] == rel[1].tolist()
    names = ['__background__', 'a', 'b', 'c']
    trip = top_triplets(out, names, ['__background__', 'on', 'near'], box_topk=2, rel_topk=5)
    assert [t[4] for t in trip] == ['0_a => near => 1_b']


def test_list_images_folder_json_and_text(tmp_path):
    for name in ('b.jpg', 'a.png', 'notes.txt', 'c.JPEG'):
        (tmp_path / name).write_bytes(b'x')
    images, ignored = list_images(str(tmp_path))
    assert [osp.basename(p) for p in images] == ['a.png', 'b.jpg', 'c.JPEG']
    assert [osp.basename(p) for p in ignored] == ['notes.txt']
    (tmp_path / 'list.json').write_text(json.dumps(['b.jpg', str(tmp_path / 'a.png')]))
    assert list_images(str(tmp_path / 'list.json'))[0] == [str(tmp_path / 'b.jpg'),
                                                           str(tmp_path / 'a.png')]
    (tmp_path / 'list.txt').write_text('a.png\n\nb.jpg\n')
    assert len(list_images(str(tmp_path / 'list.txt'))[0]) == 2
    (tmp_path / 'bad.json').write_text('{"a": 1}')
    with pytest.raises(ValueError, match='JSON list'):
        list_images(str(tmp_path / 'bad.json'))
    with pytest.raises(FileNotFoundError, match='IMAGES_DIR_OR_LIST'):
        list_images(str(tmp_path / 'nowhere'))


CONFIG = """
default_scope = 'mmdet'
custom_imports = dict(imports=['ovkit.sgg'], allow_failed_imports=False)
model = {model}
test_dataloader = dict(dataset=dict(type='VGSGGDataset', pipeline=[
    dict(type='LoadImageFromFile'), dict(type='LoadSGGAnnotations'),
    dict(type='Resize', scale=(120, 90), keep_ratio=True), dict(type='PackSGGInputs')]))
"""


@pytest.fixture(scope='module')
def sgdet_run(tmp_path_factory):
    """A tiny random SGDet model saved as a Runner would, and a folder with a corrupt image."""
    tmp = tmp_path_factory.mktemp('infer')
    cfg = sgg_model_cfg('sgdet')
    cfg.relation_head.statistics = None
    cfg.relation_head.predictor.update(glove_dir=None)
    model = build_in_mmdet_scope(cfg)
    # a confident box head so that the random detector keeps boxes through its NMS
    torch.manual_seed(0)
    cfg_path = tmp / 'sgdet_tiny.py'
    cfg_path.write_text(CONFIG.format(model=repr(cfg.to_dict())))
    ckpt = str(tmp / 'model.pth')
    save_checkpoint(dict(meta=dict(dataset_meta=dict(classes=CLASSES, predicates=PREDICATES)),
                         state_dict=model.state_dict()), ckpt)
    images = tmp / 'images'
    images.mkdir()
    rng = np.random.default_rng(0)
    for name, size in (('b_street.jpg', (160, 100)), ('a_room.png', (90, 120))):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            images / name)
    (images / 'c_broken.jpg').write_bytes(b'not a jpeg at all')
    (images / 'readme.md').write_text('not an image')
    out = tmp / 'out'
    res = main([str(cfg_path), ckpt, str(images), '--out', str(out), '--device', 'cpu',
                '--box-topk', '4', '--rel-topk', '3'])
    return dict(tmp=tmp, cfg=str(cfg_path), ckpt=ckpt, images=images, out=out, res=res)


def test_sgg_infer_writes_sgb_files_pictures_and_lists_the_corrupt_image(sgdet_run):
    out, images = sgdet_run['out'], sgdet_run['images']
    info = json.loads((out / 'custom_data_info.json').read_text())
    pred = json.loads((out / 'custom_prediction.json').read_text())
    assert set(info) == DATA_FIELDS
    assert info['idx_to_files'] == [str(images / 'a_room.png'), str(images / 'b_street.jpg')]
    assert info['ind_to_classes'] == ['__background__', *CLASSES]
    assert info['ind_to_predicates'] == list(PREDICATES)
    assert set(pred) == {'0', '1'}
    for entry in pred.values():
        assert set(entry) == PRED_FIELDS
        n, m = len(entry['bbox']), len(entry['rel_pairs'])
        assert n > 1 and m == n * (n - 1)
        assert entry['bbox_scores'] == sorted(entry['bbox_scores'], reverse=True)
        assert entry['rel_scores'] == sorted(entry['rel_scores'], reverse=True)
        assert all(1 <= lab <= NUM_CLASSES for lab in entry['bbox_labels'])
        probs = np.array(entry['rel_all_scores'])
        assert probs.shape == (m, NUM_PREDICATES + 1)
        np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
        assert entry['rel_labels'] == (probs[:, 1:].argmax(1) + 1).tolist()
        np.testing.assert_allclose(entry['rel_scores'], probs[:, 1:].max(1), rtol=1e-6)
        assert {i for p in entry['rel_pairs'] for i in p} <= set(range(n))
    skipped = json.loads((out / 'skipped_images.json').read_text())
    assert [s['file'] for s in skipped] == [str(images / 'c_broken.jpg')]
    assert sgdet_run['res']['skipped'][0]['file'].endswith('c_broken.jpg')
    for stem in ('0_a_room', '1_b_street'):
        with open(out / f'{stem}.png', 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'
        lines = (out / f'{stem}.txt').read_text().splitlines()
        assert 0 < len(lines) <= 3 and all(' => ' in line for line in lines)


def test_boxes_in_sgb_test_frame_or_original_pixels(sgdet_run):
    out2 = sgdet_run['tmp'] / 'out_orig'
    main([sgdet_run['cfg'], sgdet_run['ckpt'], str(sgdet_run['images']), '--out', str(out2),
          '--device', 'cpu', '--original-coords', '--no-vis'])
    test_frame = json.loads((sgdet_run['out'] / 'custom_prediction.json').read_text())
    original = json.loads((out2 / 'custom_prediction.json').read_text())
    # b_street.jpg (160 x 100) is shown at 120 x 75 (scale (120, 90), keep ratio): x0.75;
    # a_room.png (90 x 120) fits as it is: x1
    for idx, scale in (('1', 0.75), ('0', 1.0)):
        new, old = np.array(test_frame[idx]['bbox']), np.array(original[idx]['bbox'])
        np.testing.assert_allclose(new, old * scale, rtol=1e-5, atol=1e-4)
    assert not list(out2.glob('*.png'))


def test_sgg_infer_refuses_predcls_and_no_images(sgdet_run, tmp_path):
    with pytest.raises(ValueError, match='model.mode'):
        main([sgdet_run['cfg'], sgdet_run['ckpt'], str(sgdet_run['images']), '--out',
              str(tmp_path), '--cfg-options', 'model.mode=predcls'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no image'):
        main([sgdet_run['cfg'], sgdet_run['ckpt'], str(tmp_path / 'empty'), '--out',
              str(tmp_path)])


def test_inference_pipeline_drops_annotations():
    from mmengine.config import Config
    cfg = Config(dict(test_dataloader=dict(dataset=dict(
        type='PredicateRebalanceDataset', dataset=dict(pipeline=[
            dict(type='LoadImageFromFile'), dict(type='LoadSGGAnnotations'),
            dict(type='Resize', scale=(10, 10)), dict(type='PackSGGInputs')])))))
    steps = inference_pipeline(cfg)
    assert [s['type'] for s in steps] == ['LoadImageFromFile', 'Resize', 'PackDetInputs']
