"""Preflight of PP-TSM configs: each missing input is one ``error:`` line naming the config
key, the path and how to obtain the file (what the launchers run before torchrun)."""
import os.path as osp

import pytest

from ovkit.tools import preflight
from tests.conftest import REPO

CFG_DIR = osp.join(REPO, 'configs', 'pptsm')
TINY = osp.join(CFG_DIR, 'pptsm_tiny-r18_2xb4-1x1x8-24e_shapes-video.py')
UCF101 = osp.join(CFG_DIR, 'pptsm_k400-distill-pretrained-r50_1xb16-1x1x8-30e_ucf101-rgb.py')


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A working folder with data/shapes/video, as the tiny configs expect."""
    from ovkit.shapes import make_shapes
    make_shapes(str(tmp_path / 'data' / 'shapes'), seed=0, kinds=['video'])
    monkeypatch.chdir(tmp_path)
    return tmp_path


def errors(capsys, *argv):
    """The ``error:`` lines of ``python -m ovkit.tools.preflight train ...`` (exit 2)."""
    with pytest.raises(SystemExit) as exit_info:
        preflight.main(['train', *argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith('error:')], err


def test_clean_tiny_config_passes(ws, capsys):
    preflight.main(['train', TINY])
    assert 'inputs of' in capsys.readouterr().err  # the one-line success summary


def test_missing_pretrained_checkpoint_is_one_line_with_the_converter(ws, capsys):
    lines, err = errors(capsys, TINY, '--cfg-options',
                        'model.backbone.pretrained=checkpoints/resnet50_vd_ssld_v2.pth')
    assert len(lines) == 1 and err.count('\n') == 1, err
    line = lines[0]
    assert "model.backbone.pretrained = 'checkpoints/resnet50_vd_ssld_v2.pth': not found" in line
    assert ('download ResNet50_vd_ssld_v2_pretrained.pdparams' in line
            and 'pptsm_paddle.py ResNet50_vd_ssld_v2_pretrained.pdparams '
                'checkpoints/resnet50_vd_ssld_v2.pth' in line), line
    # A Paddle file given directly: convert it first.
    (ws / 'w.pdparams').write_bytes(b'\x80\x04}q\x00.')
    lines, _ = errors(capsys, TINY, '--cfg-options', 'model.backbone.pretrained=w.pdparams')
    assert len(lines) == 1 and 'this is a Paddle file: convert it' in lines[0], lines


def test_missing_load_from_names_the_converter(ws, capsys):
    lines, err = errors(capsys, TINY, '--cfg-options', 'load_from=checkpoints/pptsm_k400.pth')
    assert len(lines) == 1 and err.count('\n') == 1, err
    assert lines[0].startswith("error: load_from = 'checkpoints/pptsm_k400.pth': not found")
    assert 'pptsm_paddle.py IN.pdparams checkpoints/pptsm_k400.pth' in lines[0], lines[0]


def test_missing_list_file_names_the_key_and_make_shapes(ws, capsys):
    (ws / 'data/shapes/video/val_list.txt').unlink()
    lines, err = errors(capsys, TINY)
    assert len(lines) == 1 and err.count('\n') == 1, err
    assert lines[0].startswith(
        "error: val_dataloader.dataset.ann_file = 'data/shapes/video/val_list.txt': not found")
    assert 'make_shapes.py --out data/shapes --kinds video' in lines[0]


def test_ucf101_without_data_names_every_input_and_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('DATA_ROOT', str(tmp_path / 'ucf101'))
    monkeypatch.setenv('PRETRAINED', 'checkpoints/pptsm_k400_uniform_distill.pth')
    _, err = errors(capsys, UCF101)
    problems = [line.strip() for line in err.splitlines()[1:]]
    assert err.startswith('error: ') and '4 problems stop the run' in err.splitlines()[0], err
    by_key = {line.split(' = ')[0]: line for line in problems}
    assert set(by_key) == {'train_dataloader.dataset.data_prefix.video',
                           'train_dataloader.dataset.ann_file', 'val_dataloader.dataset.ann_file',
                           'model.backbone.pretrained'}
    assert 'ucf101_train_split_1_videos.txt' in by_key['train_dataloader.dataset.ann_file']
    assert 'generate_videos_filelist.sh' in by_key['train_dataloader.dataset.ann_file']
    assert 'download_videos.sh' in by_key['train_dataloader.dataset.data_prefix.video']
    assert 'ppTSM_k400_uniform_distill.pdparams' in by_key['model.backbone.pretrained']
