"""video_infer loads checkpoints strictly: one that does not fit the config stops the tool with
one message naming the config, the checkpoint and what differs (it used to print labels from
random weights and exit 0)."""
import os.path as osp

import pytest
import torch
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.registry import DefaultScope

from ovkit.pptsm.video_infer import CheckpointMismatch, load_recognizer, main
from tests.conftest import REPO

TINY = osp.join(REPO, 'configs', 'pptsm', 'pptsm_tiny-r18_2xb4-1x1x8-24e_shapes-video.py')


def save_tiny(path, **changes):
    """A checkpoint of the tiny recognizer with some config values changed."""
    cfg = Config.fromfile(TINY)
    cfg.merge_from_dict(changes)
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)
    return model


@pytest.mark.parametrize('changes,says', [
    ({'model.cls_head.num_classes': 5},
     'the checkpoint classifies 5 classes, the config 4 (model.cls_head.num_classes)'),
    ({'model.backbone.depth': 34},
     'the checkpoint holds a depth-34 backbone, the config depth 18 (model.backbone.depth)'),
])
def test_a_checkpoint_that_does_not_fit_stops_with_one_message(tmp_path, changes, says):
    ckpt = str(tmp_path / 'other.pth')
    save_tiny(ckpt, **changes)
    video = tmp_path / 'v.avi'
    video.write_bytes(b'')  # never read: the checkpoint is refused first
    with pytest.raises(SystemExit) as exit_info:
        main([TINY, ckpt, str(video)])
    message = str(exit_info.value.code)
    assert message.startswith(f'error: checkpoint {ckpt} does not fit config {TINY}: {says}')
    assert '\n' not in message


def test_a_fitting_checkpoint_loads_every_weight(tmp_path):
    ckpt = str(tmp_path / 'tiny.pth')
    saved = save_tiny(ckpt)
    model = load_recognizer(Config.fromfile(TINY), TINY, ckpt)
    assert not model.training
    for key, value in saved.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointMismatch, match='junk.pth cannot be read'):
        load_recognizer(Config.fromfile(TINY), TINY, str(tmp_path / 'junk.pth'))
