"""Paddle's sampling and crops: frame indices and crop boxes against the formulas."""
import numpy as np
import pytest
from mmaction.datasets.transforms import DenseSampleFrames
from PIL import Image

from ovkit.pptsm.transforms import (
    PaddleCenterCrop,
    PaddleMultiScaleCrop,
    PaddleRandomCrop,
    PaddleSampleFrames,
    PaddleScale,
    PaddleThreeCrop,
)


def frames(n, h, w, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize('length', [8, 37, 64, 250, 301])
def test_uniform_sampling_train_and_test(length):
    d = length // 8
    test = PaddleSampleFrames(8, test_mode=True).transform(dict(total_frames=length,
                                                                start_index=0))
    assert test['frame_inds'].tolist() == [i * d + (d - 1) // 2 for i in range(8)]
    assert test['num_clips'] == 8 and test['clip_len'] == 1
    np.random.seed(0)
    seen = set()
    for _ in range(200):
        inds = PaddleSampleFrames(8).transform(dict(total_frames=length,
                                                    start_index=0))['frame_inds']
        offs = inds - np.arange(8) * d
        assert ((offs >= 0) & (offs <= d - 1)).all()  # one frame anywhere in its segment
        seen.update(offs.tolist())
    assert seen == set(range(d))  # randint[0, d-1], both ends reachable


def test_uniform_sampling_short_videos_and_start_index():
    out = PaddleSampleFrames(8, test_mode=False).transform(dict(total_frames=5, start_index=1))
    assert out['frame_inds'].tolist() == [1, 2, 3, 4, 5, 1, 2, 3]  # i mod L, 1-based frames
    with pytest.raises(ValueError, match='clip.mp4.*min_frames'):
        PaddleSampleFrames(8, min_frames=8).transform(dict(total_frames=5, start_index=0,
                                                           filename='clip.mp4'))


def test_differs_from_mmaction_sampleframes_at_test_time():
    from mmaction.datasets.transforms import SampleFrames
    mm = SampleFrames(clip_len=1, num_clips=8, test_mode=True).transform(
        dict(total_frames=300, start_index=0))['frame_inds'].tolist()
    ours = PaddleSampleFrames(8, test_mode=True).transform(
        dict(total_frames=300, start_index=0))['frame_inds'].tolist()
    assert ours == [18 + 37 * i for i in range(8)] and mm != ours


@pytest.mark.parametrize('length', [30, 64, 65, 300])
def test_dense_sampling_is_mmaction_dense_sample_frames(length):
    """Paddle dense: stride 64//8 from a start in [0, L-64); 10 starts linspace'd at test."""
    pos = max(1, 1 + length - 64)
    np.random.seed(1)
    for _ in range(20):
        inds = DenseSampleFrames(clip_len=1, frame_interval=1, num_clips=8).transform(
            dict(total_frames=length, start_index=0))['frame_inds']
        start = inds[0]
        assert start == 0 if pos == 1 else 0 <= start <= pos - 2
        assert inds.tolist() == [(start + 8 * i) % length for i in range(8)]
    test = DenseSampleFrames(clip_len=1, frame_interval=1, num_clips=8, test_mode=True).transform(
        dict(total_frames=length, start_index=0))['frame_inds']
    starts = np.linspace(0, pos - 1, num=10, dtype=int)
    assert test.tolist() == [(s + 8 * i) % length for s in starts for i in range(8)]


@pytest.mark.parametrize('w,h,out', [(320, 240, (341, 256)), (640, 360, (341, 256)),
                                     (360, 640, (256, 341)), (455, 256, (455, 256))])
def test_scale_fixed_ratio(w, h, out):
    res = PaddleScale(256).transform(dict(imgs=frames(2, h, w)))
    assert res['imgs'][0].shape[:2] == out[::-1] and res['img_shape'] == out[::-1]


def test_scale_matches_pillow_bilinear():
    img = frames(1, 240, 320)[0]
    res = PaddleScale(256).transform(dict(imgs=[img]))
    ref = np.asarray(Image.fromarray(img).resize((341, 256), Image.BILINEAR))
    assert np.array_equal(res['imgs'][0], ref)


def paddle_offsets(w, h, cw, ch):
    """The 13 offsets of Paddle's MultiScaleCrop, dropping coinciding ones when a step is 0."""
    ws, hs = (w - cw) / 4, (h - ch) / 4
    grid = [(0, 0), (4, 0), (0, 4), (4, 4), (2, 2)]
    keep = [True, ws != 0, hs != 0, ws != 0 and hs != 0, ws != 0 or hs != 0]
    ret = [(a * ws, b * hs) for (a, b), k in zip(grid, keep) if k]
    ret += [(a * ws, b * hs) for a, b in ((0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1),
                                           (1, 3), (3, 3))]
    return ret


def test_multiscale_crop_boxes_and_pixels():
    img_w, img_h = 341, 256
    sizes = [256, 224, 192, 168]  # int(256 * s) for s in (1, .875, .75, .66)
    allowed = {}
    for i, ch in enumerate(sizes):
        for j, cw in enumerate(sizes):
            if abs(i - j) <= 1:
                allowed[(cw, ch)] = {(round(x), round(y))
                                     for x, y in paddle_offsets(img_w, img_h, cw, ch)}
    assert len(paddle_offsets(341, 256, 256, 256)) == 11  # h step 0: two corners dropped
    assert len(paddle_offsets(341, 256, 224, 224)) == 13
    np.random.seed(0)
    src = frames(2, img_h, img_w)
    seen = set()
    for _ in range(300):
        res = PaddleMultiScaleCrop(256).transform(dict(imgs=list(src)))
        x0, y0, x1, y1 = res['crop_bbox'].tolist()
        assert (x0, y0) in allowed[(x1 - x0, y1 - y0)]
        seen.add((x1 - x0, y1 - y0))
    assert seen == set(allowed)
    ref = np.asarray(Image.fromarray(src[1]).crop((x0, y0, x1, y1)).resize((256, 256),
                                                                         Image.BILINEAR))
    assert np.array_equal(res['imgs'][1], ref) and res['img_shape'] == (256, 256)
    # Float steps (341 - 256) / 4 = 21.25, rounded half to even by Pillow: 42.5 -> 42 and the
    # right edge at 85 (mmaction2's floored step gives 84).
    assert allowed[(256, 256)] == {(0, 0), (21, 0), (42, 0), (64, 0), (85, 0)}


def test_random_crop_reaches_both_ends():
    np.random.seed(0)
    xs, ys = set(), set()
    for _ in range(600):
        res = PaddleRandomCrop(224).transform(dict(imgs=frames(1, 230, 228)))
        x0, y0, x1, y1 = res['crop_bbox'].tolist()
        assert x1 - x0 == 224 and y1 - y0 == 224 and res['imgs'][0].shape == (224, 224, 3)
        xs.add(x0)
        ys.add(y0)
    assert xs == set(range(5)) and ys == set(range(7))  # [0, W - 224] inclusive
    with pytest.raises(ValueError, match='v.mp4.*smaller'):
        PaddleRandomCrop(224).transform(dict(imgs=frames(1, 200, 300), filename='v.mp4'))


@pytest.mark.parametrize('w,h,x', [(341, 256, 58), (455, 256, 116), (457, 256, 116)])
def test_center_crop_rounds_half_to_even(w, h, x):
    src = frames(1, h, w)
    res = PaddleCenterCrop(224).transform(dict(imgs=src))
    assert res['crop_bbox'].tolist() == [x, 16, x + 224, 240]
    assert np.array_equal(res['imgs'][0], src[0][16:240, x:x + 224])


def test_three_crop_offsets_and_order():
    src = frames(3, 256, 341)
    res = PaddleThreeCrop(224).transform(dict(imgs=src))
    # ws = (341 - 224) // 4 = 29, hs = (256 - 224) // 4 = 8: left, right, centre at y = 16.
    boxes = res['crop_bbox'][::3].tolist()
    assert boxes == [[0, 16, 224, 240], [116, 16, 340, 240], [58, 16, 282, 240]]
    assert len(res['imgs']) == 9
    assert np.array_equal(res['imgs'][4], src[1][16:240, 116:340])  # crop-major order
    flipped = PaddleThreeCrop(224, flip=True).transform(dict(imgs=src))
    assert len(flipped['imgs']) == 18
    assert np.array_equal(flipped['imgs'][3], src[0][16:240, 0:224][:, ::-1])
