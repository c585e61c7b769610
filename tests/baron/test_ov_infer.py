"""tools/ov_infer.py: open-vocabulary inference with class names given on the command line."""
import json
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO

SHAPES = osp.join(REPO, 'configs', 'baron', 'shapes.py')
TOOL = osp.join(REPO, 'tools', 'ov_infer.py')


from ovkit.baron import ov_infer  # noqa: E402  (the tool's logic; TOOL is its entry point)


# --------------------------------------------------------------------------- bad inputs (fast)
@pytest.fixture
def files(tmp_path):
    """An existing config, checkpoint file and image; the checks run before any model is built."""
    ckpt = tmp_path / 'model.pth'
    ckpt.write_bytes(b'not read')
    img = tmp_path / 'img.png'
    img.write_bytes(b'not read')
    return dict(ckpt=str(ckpt), img=str(img), tmp=tmp_path)


def _error(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        ov_infer.main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_no_classes_given(files, capsys):
    err = _error(capsys, [SHAPES, files['ckpt'], files['img']])
    assert 'one of the arguments --classes --classes-file is required' in err


@pytest.mark.parametrize('classes,expect', [
    ('cat,,dog', "--classes 'cat,,dog': class name 2 of 3 is empty"),
    ('cat,dog,', 'class name 3 of 3 is empty'),
    (' ', 'class name 1 of 1 is empty'),
    ('cat,dog,cat', "--classes: class name 'cat' is repeated"),
    ('traffic_light,Traffic light', "repeated (same as 'traffic_light' in the prompts)"),
])
def test_empty_or_repeated_class_names(files, capsys, classes, expect):
    err = _error(capsys, [SHAPES, files['ckpt'], files['img'], '--classes', classes])
    assert expect in err


def test_classes_file_errors(files, capsys):
    missing = str(files['tmp'] / 'nope.txt')
    err = _error(capsys, [SHAPES, files['ckpt'], files['img'], '--classes-file', missing])
    assert f"--classes-file: class names file '{missing}' not found" in err
    dup = files['tmp'] / 'dup.txt'
    dup.write_text('cat\n# a comment\ndog\ncat\n')
    err = _error(capsys, [SHAPES, files['ckpt'], files['img'], '--classes-file', str(dup)])
    assert '--classes-file:' in err and "repeats ['cat']" in err
    empty = files['tmp'] / 'empty.txt'
    empty.write_text('\n# nothing\n')
    err = _error(capsys, [SHAPES, files['ckpt'], files['img'], '--classes-file', str(empty)])
    assert 'has no class names' in err


def test_missing_config_checkpoint_image_are_named(files, capsys):
    tmp = files['tmp']
    args = ['--classes', 'cat']
    err = _error(capsys, [str(tmp / 'none.py'), files['ckpt'], files['img']] + args)
    assert f"CONFIG '{tmp / 'none.py'}' not found" in err
    err = _error(capsys, [SHAPES, str(tmp / 'none.pth'), files['img']] + args)
    assert f"CKPT '{tmp / 'none.pth'}' not found" in err
    err = _error(capsys, [SHAPES, files['ckpt'], files['img'], str(tmp / 'none.jpg')] + args)
    assert f"INPUTS: image '{tmp / 'none.jpg'}' not found" in err
    (tmp / 'empty_dir').mkdir()
    err = _error(capsys, [SHAPES, files['ckpt'], str(tmp / 'empty_dir')] + args)
    assert 'has no images' in err
    err = _error(capsys, [SHAPES, files['ckpt'], files['img'], '--score-thr', '2'] + args)
    assert '--score-thr 2.0 must be in [0, 1]' in err


def test_model_without_vocabulary_is_refused(files, capsys):
    base = osp.join(REPO, 'configs', '_base_')
    cfg = files['tmp'] / 'frcnn.py'
    cfg.write_text(f"_base_ = [{osp.join(base, 'models', 'faster_rcnn_r18_fpn_tiny.py')!r}, "
                   f"{osp.join(base, 'mmdet_runtime.py')!r}]\n")
    err = _error(capsys, [str(cfg), files['ckpt'], files['img'], '--classes', 'cat'])
    assert "model type 'FasterRCNN' does not take a vocabulary" in err


def test_cli_exits_with_usage_on_missing_checkpoint(tmp_path):
    proc = subprocess.run([sys.executable, TOOL, SHAPES, str(tmp_path / 'x.pth'), 'img.png',
                           '--classes', 'cat,dog'], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert 'usage: ov_infer.py' in proc.stderr and "CKPT '" in proc.stderr


def test_output_names_are_unique():
    assert ov_infer.output_stems(['a/x.png', 'b/x.jpg', 'c/y.png', 'd/x_1.png']) == \
        ['x', 'x_1', 'y', 'x_1_1']


# --------------------------------------------------------------------------- end to end
@pytest.fixture(scope='module')
def workspace(baron_workspace):
    """shapes data, the shapes CLIP and class embeddings the shapes config reads, and an
    8-class checkpoint of a randomly initialised shapes BARON."""
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import save_checkpoint

    import ovkit.baron  # noqa: F401
    ws = baron_workspace
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        cfg = Config.fromfile(SHAPES)
        cfg.model.backbone.init_cfg = None
        init_default_scope('mmdet')
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
    assert model.roi_head.bbox_head.num_classes == 8
    ckpt = ws / 'baron_shapes_random.pth'
    save_checkpoint(dict(meta=dict(dataset_meta=dict(classes=cfg.metainfo.classes)),
                         state_dict=model.state_dict()), str(ckpt))
    return ws, ckpt


@pytest.mark.e2e
def test_new_vocabulary_end_to_end(workspace, monkeypatch, capsys):
    from mmcv import imread

    from ovkit.clip import build_class_embeddings, build_clip, load_prompt_templates
    ws, ckpt = workspace
    monkeypatch.chdir(ws)
    names = ['circle', 'zebra', 'star']
    val = ws / 'data' / 'shapes' / 'coco' / 'val'
    images = sorted(val.glob('*.png'))[:2]
    out = ws / 'out'
    result = ov_infer.main([SHAPES, str(ckpt)] + [str(p) for p in images] + [
        '--classes', ' circle, zebra,star ', '--score-thr', '0', '--out-dir', str(out),
        '--device', 'cpu'])
    printed = capsys.readouterr().out
    assert 'ov_infer: 2 images, vocabulary of 3 classes (replacing the 8 checkpoint classes)' \
        in printed
    model = result['model']
    assert result['names'] == names
    assert model.dataset_meta['classes'] == tuple(names)
    assert len(model.dataset_meta['palette']) >= 3

    # The 8-class checkpoint fits the 3-class model exactly: class embeddings are not state.
    state = torch.load(str(ckpt), map_location='cpu')['state_dict']
    assert not any('cls_embeddings' in k for k in state)
    model.load_state_dict(state, strict=True)

    # Embeddings: the model's equal an independent computation from the same frozen CLIP...
    head = model.roi_head.bbox_head
    assert head.num_classes == 3 and head.cls_embeddings.shape == (3, 64)
    templates = load_prompt_templates('prompt_templates.txt')
    clip = build_clip(dict(model_name='tiny', checkpoint='data/shapes/clip/shapes_clip_seed0.pth'))
    expected = build_class_embeddings(clip, names, templates, layer=head.text_layer)
    torch.testing.assert_close(head.cls_embeddings, expected, rtol=0, atol=1e-5)
    # ... and the offline file's rows for the shared names (circle = 0, star = 6).
    offline = torch.from_numpy(np.load(ws / 'data' / 'shapes' / 'baron' / 'shapes_clip.npy'))
    torch.testing.assert_close(head.cls_embeddings[[0, 2]], offline[[0, 6]], rtol=0, atol=1e-5)

    for img in images:
        record = json.loads((out / f'{img.stem}.json').read_text())
        assert record['classes'] == names and (record['height'], record['width']) == (128, 128)
        dets = record['detections']
        assert dets, 'score_thr 0 keeps every detection the head returns'
        for det in dets:
            assert det['label'] in (0, 1, 2) and det['class'] == names[det['label']]
            x1, y1, x2, y2 = det['bbox']
            assert 0 <= x1 <= x2 <= 128 and 0 <= y1 <= y2 <= 128 and 0 <= det['score'] <= 1
        drawn = out / f'{img.stem}.png'
        assert drawn.is_file() and imread(str(drawn)).shape == (128, 128, 3)
        assert f'{img}: {len(dets)} detections' in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f'{p.stem}.json' for p in images] + [f'{p.stem}.png' for p in images])


@pytest.mark.e2e
def test_classes_file_folder_input_and_threshold(workspace, monkeypatch, tmp_path):
    ws, ckpt = workspace
    monkeypatch.chdir(ws)
    folder = tmp_path / 'imgs'
    folder.mkdir()
    src = sorted((ws / 'data' / 'shapes' / 'coco' / 'val').glob('*.png'))[0]
    (folder / 'a.png').write_bytes(src.read_bytes())
    (folder / 'notes.txt').write_text('not an image')
    classes = tmp_path / 'classes.txt'
    classes.write_text('# my vocabulary\nring\n\nhexagon\n')
    out = tmp_path / 'out'
    result = ov_infer.main([SHAPES, str(ckpt), str(folder), '--classes-file', str(classes),
                            '--score-thr', '0.4', '--out-dir', str(out), '--no-draw'])
    assert result['names'] == ['ring', 'hexagon']
    assert sorted(p.name for p in out.iterdir()) == ['a.json']
    dets = json.loads((out / 'a.json').read_text())['detections']
    assert all(d['score'] >= 0.4 and d['class'] == ['ring', 'hexagon'][d['label']] for d in dets)


@pytest.mark.e2e
def test_class_specific_regression_cannot_change_the_class_count(workspace, monkeypatch):
    ws, ckpt = workspace
    monkeypatch.chdir(ws)
    img = sorted((ws / 'data' / 'shapes' / 'coco' / 'val').glob('*.png'))[0]
    with pytest.raises(ValueError, match='needs reg_class_agnostic=True'):
        ov_infer.main([SHAPES, str(ckpt), str(img), '--classes', 'circle,zebra',
                       '--out-dir', str(ws / 'never'), '--cfg-options',
                       'model.roi_head.bbox_head.reg_class_agnostic=False'])


@pytest.mark.e2e
def test_novel_class_is_drawn_with_its_label(workspace, monkeypatch, tmp_path):
    """A validation image holding a star (novel: never a training target), --classes naming
    it: the PNG gets star boxes, each with its 'star: score' label."""
    from mmcv import imread
    from mmdet.visualization import DetLocalVisualizer
    ws, ckpt = workspace
    monkeypatch.chdir(ws)
    val = json.loads((ws / 'data' / 'shapes' / 'coco' / 'annotations' / 'val.json').read_text())
    star = next(c['id'] for c in val['categories'] if c['name'] == 'star')
    image_id = next(a['image_id'] for a in val['annotations'] if a['category_id'] == star)
    name = next(i['file_name'] for i in val['images'] if i['id'] == image_id)
    img = ws / 'data' / 'shapes' / 'coco' / 'val' / name
    texts = []  # what the visualizer writes next to the boxes
    draw_texts = DetLocalVisualizer.draw_texts

    def spy(self, text, *args, **kwargs):
        texts.extend([text] if isinstance(text, str) else list(text))
        return draw_texts(self, text, *args, **kwargs)

    monkeypatch.setattr(DetLocalVisualizer, 'draw_texts', spy)
    out = tmp_path / 'out'
    result = ov_infer.main([SHAPES, str(ckpt), str(img), '--classes', 'star,circle',
                            '--score-thr', '0.05', '--out-dir', str(out), '--device', 'cpu'])
    record = result['records'][0]
    stars = [d for d in record['detections'] if d['class'] == 'star']
    assert stars and record['drawn'] == str(out / f'{img.stem}.png')
    # one label per kept detection, in mmdet's "name: score%" form, the novel class among them
    assert len(texts) == len(record['detections'])
    star_texts = sorted(float(t.split(': ')[1]) for t in texts if t.startswith('star: '))
    expected = sorted(d['score'] * 100 for d in stars)
    assert len(star_texts) == len(expected) and np.allclose(star_texts, expected, atol=0.051)
    drawn = imread(record['drawn'], channel_order='rgb').astype(int)
    original = imread(str(img), channel_order='rgb').astype(int)
    x1, y1, x2, y2 = (int(v) for v in max(stars, key=lambda d: d['score'])['bbox'])
    box = np.zeros(drawn.shape[:2], bool)
    box[max(y1 - 1, 0):y2 + 2, max(x1 - 1, 0):x2 + 2] = True
    assert (np.abs(drawn - original).sum(-1)[box] > 30).any()  # its outline was painted
