"""SGB's detector geometry as mmdet modules equals maskrcnn-benchmark's formulas
(tests/sgg/maskrcnn_render.py), where mmdet's own modules do not."""
import math

import numpy as np
import pytest
import torch

import ovkit.sgg  # noqa: F401  (registers)
from ovkit.sgg.convert_sgb_detector import check_cell_anchors
from ovkit.sgg.sgb_geometry import (
    SGB_VG_ANCHORS,
    SGBAnchorGenerator,
    SGBDeltaXYWHBBoxCoder,
    SGBRoIExtractor,
)
from tests.sgg import maskrcnn_render as mr

RATIOS = SGB_VG_ANCHORS['ratios']


def test_anchor_generator_reproduces_generate_anchors():
    gen = SGBAnchorGenerator(**SGB_VG_ANCHORS)
    for lvl, (stride, size) in enumerate(zip(SGB_VG_ANCHORS['strides'],
                                             SGB_VG_ANCHORS['sizes'])):
        assert torch.equal(gen.base_anchors[lvl], mr.generate_anchors(stride, (size, ), RATIOS))
    # level 0 by hand: ratio 0.2323 on the 4 x 4 window -> w round(sqrt(16 / 0.2323)) = 8,
    # h round(8 * 0.2323) = 2, times 8 around centre 1.5: [1.5 - 31.5, 1.5 - 7.5, ...]
    assert gen.base_anchors[0].tolist() == [[-30, -6, 33, 9], [-18, -10, 21, 13],
                                            [-14, -18, 17, 21], [-6, -22, 9, 25]]
    # mmdet-style scales give the same, and so does a grid of every level
    same = SGBAnchorGenerator(strides=[4, 8, 16, 32, 64], ratios=RATIOS, scales=[8])
    sizes = [(5, 7), (3, 4), (2, 2), (1, 1), (1, 1)]
    grids = same.grid_priors(sizes, device='cpu')
    for lvl, (g, stride) in enumerate(zip(grids, SGB_VG_ANCHORS['strides'])):
        assert torch.equal(g, mr.grid_anchors(sizes[lvl], stride, gen.base_anchors[lvl]))
    assert same.num_base_priors == [4] * 5
    # several sizes per level: ratio-major rows, as generate_anchors
    multi = SGBAnchorGenerator(strides=[16], ratios=[0.5, 1, 2], sizes=[(32, 64, 128)])
    assert torch.equal(multi.base_anchors[0], mr.generate_anchors(16, (32, 64, 128),
                                                                  (0.5, 1, 2)))
    # mmdet's own generators place these anchors elsewhere
    from mmdet.models.task_modules.prior_generators import AnchorGenerator, LegacyAnchorGenerator
    for other in (AnchorGenerator(strides=[4], ratios=RATIOS, scales=[8]),
                  LegacyAnchorGenerator(strides=[4], ratios=RATIOS, scales=[8],
                                        center_offset=0.5)):
        assert not torch.equal(other.base_anchors[0], gen.base_anchors[0])


def test_anchor_generator_arguments():
    with pytest.raises(ValueError, match='exactly one of sizes'):
        SGBAnchorGenerator(strides=[4], ratios=[1.0], sizes=[32], scales=[8])
    with pytest.raises(ValueError, match='2 sizes for 1 strides'):
        SGBAnchorGenerator(strides=[4], ratios=[1.0], sizes=[32, 64])


@pytest.mark.parametrize('stds, weights', [((1., 1., 1., 1.), (1., 1., 1., 1.)),
                                           ((.1, .1, .2, .2), (10., 10., 5., 5.))])
def test_box_coder_is_maskrcnns_box_coder(stds, weights):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 300
    boxes = torch.cat([xy, xy + torch.rand(200, 2, generator=g) * 200], 1)
    deltas = torch.randn(200, 8, generator=g) * 0.5
    deltas[:5, 2] = 9.0                     # beyond log(1000 / 16): clamped from above
    deltas[5:10, 3] = -9.0                  # maskrcnn does not clamp from below
    coder = SGBDeltaXYWHBBoxCoder(target_stds=stds)
    ref = mr.decode(deltas, boxes, weights)
    assert torch.equal(coder.decode(boxes, deltas), ref)
    assert torch.equal(coder.decode(boxes, deltas, max_shape=(400, 450)),
                       mr.clip_to_image(ref, 450, 400))
    gts = coder.decode(boxes, deltas[:, :4])
    assert torch.equal(coder.encode(boxes, gts), mr.encode(gts, boxes, weights))
    # mmdet's LegacyDeltaXYWHBBoxCoder: boxes 1 pixel wider and taller (no -/+ 0.5)
    from mmdet.models.task_modules.coders import LegacyDeltaXYWHBBoxCoder
    legacy = LegacyDeltaXYWHBBoxCoder(target_stds=stds).decode(boxes[10:], deltas[10:, :4])
    torch.testing.assert_close(legacy[:, :2], ref[10:, :2] - 0.5)
    torch.testing.assert_close(legacy[:, 2:], ref[10:, 2:4] + 0.5)
    with pytest.raises(ValueError, match='target_means must be zeros'):
        SGBDeltaXYWHBBoxCoder(target_means=(0.1, 0, 0, 0))
    assert coder.bbox_xform_clip == math.log(1000. / 16)


def test_roi_levels_are_maskrcnns_level_mapper():
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(300, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(300, 2, generator=g) ** 2 * 700], 1)
    # the +1 matters at the borders: 112 pixels wide is level 1 for maskrcnn (s / 224 = 0.5)
    boxes = torch.cat([boxes, torch.tensor([[0., 0., 111., 111.], [0., 0., 110., 110.],
                                            [0., 0., 223., 223.], [0., 0., 447., 447.]])])
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
    layer = dict(type='RoIAlign', output_size=7, sampling_ratio=2, aligned=False)
    ours = SGBRoIExtractor(layer, 256, [4, 8, 16, 32])
    ref = mr.level_mapper(boxes)
    assert torch.equal(ours.map_roi_levels(rois, 4), ref)
    assert ref[-4:].tolist() == [1, 0, 2, 3]
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    assert SingleRoIExtractor(layer, 256, [4, 8, 16, 32]).map_roi_levels(
        rois[-4:-3], 4).tolist() == [0]                 # mmdet: sqrt(111 * 111) / 56 < 2
    with pytest.raises(ValueError, match='consecutive powers of two'):
        SGBRoIExtractor(layer, 256, [4, 16])


def test_mmcv_roi_align_unaligned_is_maskrcnns_roi_align():
    from mmcv.ops import RoIAlign
    g = torch.Generator().manual_seed(2)
    feat = torch.randn(1, 3, 20, 30, generator=g)
    xy = torch.rand(40, 2, generator=g) * 120 - 10
    boxes = torch.cat([xy, xy + torch.rand(40, 2, generator=g) * 60], 1)
    boxes[0] = torch.tensor([-30., -30., -5., -5.])       # outside the map: zeros
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
    ref = mr.roi_align(feat[0], boxes, 0.25)
    ours = RoIAlign(7, spatial_scale=0.25, sampling_ratio=2, aligned=False)(feat, rois)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    aligned = RoIAlign(7, spatial_scale=0.25, sampling_ratio=2, aligned=True)(feat, rois)
    assert (aligned - ref).abs().max() > 1e-2


def test_converter_checks_the_cell_anchors():
    cells = {f'rpn.anchor_generator.cell_anchors.{i}': mr.generate_anchors(st, (sz, ), RATIOS)
             for i, (st, sz) in enumerate(zip(SGB_VG_ANCHORS['strides'],
                                              SGB_VG_ANCHORS['sizes']))}
    got = check_cell_anchors(cells)
    assert np.array_equal(got[0], [[-30, -6, 33, 9], [-18, -10, 21, 13], [-14, -18, 17, 21],
                                   [-6, -22, 9, 25]])
    assert check_cell_anchors({}) == []
    other = dict(cells)
    other['rpn.anchor_generator.cell_anchors.2'] = mr.generate_anchors(16, (128, ),
                                                                       (0.5, 1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match=r'cell_anchors.2 of the checkpoint is not .*'
                                         r'--aspect-ratios'):
        check_cell_anchors(other)
    with pytest.raises(ValueError, match='levels'):
        check_cell_anchors({k: v for k, v in cells.items() if not k.endswith('.4')})
