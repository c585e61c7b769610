"""The dense test path (10 clips x 3 crops): the recognizer's score is the mean of the 30
per-view scores (``average_clips='score'``), and the shift sees each view's 8 frames only."""
import os.path as osp

import numpy as np
import torch
from mmaction.datasets.transforms import DenseSampleFrames, FormatShape, PackActionInputs
from mmaction.registry import MODELS
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DefaultScope

from ovkit.pptsm.transforms import PaddleThreeCrop
from tests.conftest import REPO

TINY = osp.join(REPO, 'configs', 'pptsm', 'pptsm_tiny-r18_2xb4-1x1x8-24e_shapes-video.py')
T, CLIPS, SIZE = 8, 10, 32
H, W = 36, 48  # ws = (48 - 32) // 4 = 4, hs = (36 - 32) // 4 = 1
CROPS = ((0, 2), (16, 2), (8, 2))  # Paddle's left, right, centre (x, y), written out


def tiny_model():
    cfg = Config.fromfile(TINY)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    for m in model.modules():  # non-trivial statistics, so every frame's value matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    torch.nn.init.normal_(model.cls_head.fc_cls.weight, std=0.5)
    return model.eval()


def predict(model, imgs):
    """Scores of one packed sample whose frames are ``imgs`` (list of HxWx3 uint8)."""
    packed = PackActionInputs().transform(
        FormatShape('NCHW').transform(dict(imgs=imgs, num_clips=1, clip_len=1)))
    with torch.no_grad():
        return model.test_step(pseudo_collate([packed]))[0].pred_score


def test_dense_score_is_the_mean_of_the_30_view_scores():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (100, H, W, 3), dtype=np.uint8)
    res = DenseSampleFrames(clip_len=1, frame_interval=1, num_clips=T,
                            num_sample_positions=CLIPS, test_mode=True).transform(
                                dict(total_frames=len(video), start_index=0))
    inds = res['frame_inds']
    assert len(inds) == CLIPS * T
    res = PaddleThreeCrop(SIZE).transform(dict(imgs=[video[i] for i in inds]))
    assert len(res['imgs']) == 3 * CLIPS * T
    model = tiny_model()
    dense = predict(model, res['imgs'])

    def view_score(c, k):
        x, y = CROPS[c]
        return predict(model, [video[i][y:y + SIZE, x:x + SIZE]
                               for i in inds[k * T:(k + 1) * T]])

    views = torch.stack([view_score(c, k) for c in range(3) for k in range(CLIPS)])
    assert dense.shape == (4, ) and views.shape == (3 * CLIPS, 4)
    assert torch.allclose(dense, views.mean(0), rtol=1e-4, atol=1e-5), (dense, views.mean(0))
    # Control: a shift grouping 16 frames (two views) scores the same 240 frames otherwise,
    # so the equality above holds because the shift groups the frames view by view.
    for block in model.backbone.modules():
        if hasattr(block, 'is_shift'):
            block.num_segments = 2 * T
    wrong = predict(model, res['imgs'])
    assert not torch.allclose(dense, wrong, rtol=1e-3, atol=1e-3), (dense, wrong)
