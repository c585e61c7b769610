"""PaddleVideo's PP-TSM data pipeline as mmaction2 transforms.

Only what differs from mmaction2 is written here; each class says how it differs. Reused as
they are: ``DenseSampleFrames`` (the same dense sampling as Paddle's ``dense_sample``),
``Flip(flip_ratio=0.5)``, ``FormatShape('NCHW')``, ``PackActionInputs`` and the
``ActionDataPreprocessor`` normalisation ((RGB / 255 - mean) / std equals RGB - 255 * mean over
255 * std).

Resizing uses Pillow's bilinear filter by default, as Paddle's pipelines do
(``backend='cv2'`` is faster and differs by interpolation only).
"""
import mmcv
import numpy as np
from mmaction.registry import TRANSFORMS
from mmcv.transforms import BaseTransform

__all__ = ['PaddleSampleFrames', 'PaddleScale', 'PaddleMultiScaleCrop', 'PaddleRandomCrop',
           'PaddleCenterCrop', 'PaddleThreeCrop', 'paddle_segment_indices',
           'paddle_multiscale_candidates']


def paddle_segment_indices(num_frames, num_segments, seg_len=1, test_mode=False, rng=np.random):
    """Frame indices of Paddle's ``Sampler`` (uniform, not dense), 0-based.

    Train: segment length ``d = int(L / T)``; segment i starts at ``i*d + randint[0, d-seg_len]``.
    Test: segment i starts at ``i*d + (d - 1) // 2``. Short videos fall back as Paddle does
    (``i*d`` when ``1 <= d < seg_len``, ``i`` when ``d == 0``), indices taken modulo L.

    Args:
        num_frames: frames in the video L.
        num_segments: segments T.
        seg_len: consecutive frames per segment.
        test_mode: centre (test) instead of random (train) offsets.
        rng: numpy random module or Generator providing ``randint``.
    """
    avg = int(num_frames / num_segments)
    inds = []
    for i in range(num_segments):
        if avg >= seg_len:
            off = (avg - 1) // 2 if test_mode else int(rng.randint(0, avg - seg_len + 1))
            start = off + i * avg
        elif avg >= 1:
            start = i * avg
        else:
            start = i
        inds.extend(j % num_frames for j in range(start, start + seg_len))
    return np.asarray(inds, dtype=np.int64)


@TRANSFORMS.register_module()
class PaddleSampleFrames(BaseTransform):
    """Paddle's uniform segment sampling (train: random offset, test: centre of the segment).

    mmaction2's ``SampleFrames(clip_len=1, num_clips=8)`` draws the same train offsets but
    picks ``int(L/16 + i*L/8)`` at test time and handles L < T differently.

    Args:
        num_segments: segments T (frames per clip for PP-TSM).
        seg_len: consecutive frames per segment.
        test_mode: centre offsets instead of random ones.
        min_frames: videos with fewer frames raise an error naming the file (the dataset then
            counts the video and draws another); Paddle itself loops over short videos.
    """

    def __init__(self, num_segments=8, seg_len=1, test_mode=False, min_frames=1):
        self.num_segments = num_segments
        self.seg_len = seg_len
        self.test_mode = test_mode
        self.min_frames = max(1, min_frames)

    def transform(self, results):
        total = int(results['total_frames'])
        if total < self.min_frames:
            raise ValueError(f'{results.get("filename", "video")}: {total} frames, fewer than '
                             f'the {self.min_frames} PaddleSampleFrames needs (min_frames).')
        inds = paddle_segment_indices(total, self.num_segments, self.seg_len, self.test_mode)
        results['frame_inds'] = (inds + results.get('start_index', 0)).astype(np.int32)
        results['clip_len'] = self.seg_len
        results['frame_interval'] = 1
        results['num_clips'] = self.num_segments
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(num_segments={self.num_segments}, '
                f'seg_len={self.seg_len}, test_mode={self.test_mode})')


def _resize_all(imgs, size, backend):
    """Resize every frame to ``size`` = (w, h) with bilinear interpolation."""
    return [mmcv.imresize(img, size, interpolation='bilinear', backend=backend) for img in imgs]


def _crop_all(results, x, y, w, h):
    results['imgs'] = [img[y:y + h, x:x + w] for img in results['imgs']]
    results['crop_bbox'] = np.array([x, y, x + w, y + h])
    results['img_shape'] = (h, w)


@TRANSFORMS.register_module()
class PaddleScale(BaseTransform):
    """Paddle's ``Scale``: short side to ``short_size``, long side to ``int(short*4/3)``.

    With the default ``fixed_ratio=True`` every video becomes 341x256 (or 256x341), whatever
    its aspect ratio, and frames whose short side already equals ``short_size`` are left as
    they are; mmaction2's ``Resize`` keeps the aspect ratio instead.

    Args:
        short_size: target short side.
        fixed_ratio: long side ``int(short_size * 4 / 3)``; False keeps the aspect ratio.
        backend: 'pillow' (Paddle's default) or 'cv2'.
    """

    def __init__(self, short_size=256, fixed_ratio=True, backend='pillow'):
        self.short_size = short_size
        self.fixed_ratio = fixed_ratio
        self.backend = backend

    def output_size(self, w, h):
        """Output (w, h) for an input frame of size (w, h), as Paddle computes it."""
        s = self.short_size
        if (w <= h and w == s) or (h <= w and h == s):
            return w, h
        if w <= h:
            return s, int(s * 4.0 / 3.0) if self.fixed_ratio else int(h * s / w)
        return (int(s * 4.0 / 3.0) if self.fixed_ratio else int(w * s / h)), s

    def transform(self, results):
        h, w = results['imgs'][0].shape[:2]
        ow, oh = self.output_size(w, h)
        if (ow, oh) != (w, h):
            results['imgs'] = _resize_all(results['imgs'], (ow, oh), self.backend)
        results['img_shape'] = (oh, ow)
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(short_size={self.short_size}, '
                f'fixed_ratio={self.fixed_ratio}, backend={self.backend!r})')


def paddle_multiscale_candidates(w, h, target_size, scales=(1, .875, .75, .66), max_distort=1,
                                 more_fix_crop=True, allow_duplication=False):
    """Candidate crop sizes and offsets of Paddle's ``MultiScaleCrop`` (``fix_crop=True``).

    Args:
        w: frame width.
        h: frame height.
        target_size: output side; crop sizes within 3 px of it snap to it.
        scales: crop scales of the short side.
        max_distort: largest allowed index gap between the width and height scales.
        more_fix_crop: the 13-offset grid (else 5).
        allow_duplication: keep offsets that coincide when a step is zero.

    Returns:
        tuple: (list of (crop_w, crop_h), function (crop_w, crop_h) -> list of float offsets).
    """
    base = min(w, h)
    sizes = [int(base * s) for s in scales]
    snapped = [target_size if abs(x - target_size) < 3 else x for x in sizes]
    pairs = [(cw, ch) for i, ch in enumerate(snapped) for j, cw in enumerate(snapped)
             if abs(i - j) <= max_distort]

    def offsets(cw, ch):
        ws, hs = (w - cw) / 4, (h - ch) / 4
        ret = [(0, 0)]
        if allow_duplication or ws != 0:
            ret.append((4 * ws, 0))
        if allow_duplication or hs != 0:
            ret.append((0, 4 * hs))
        if allow_duplication or (hs != 0 and ws != 0):
            ret.append((4 * ws, 4 * hs))
        if allow_duplication or (hs != 0 or ws != 0):
            ret.append((2 * ws, 2 * hs))
        if more_fix_crop:
            ret += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                    (1 * ws, 1 * hs), (3 * ws, 1 * hs), (1 * ws, 3 * hs), (3 * ws, 3 * hs)]
        return ret

    return pairs, offsets


@TRANSFORMS.register_module()
class PaddleMultiScaleCrop(BaseTransform):
    """Paddle's ``MultiScaleCrop``: a random scale pair and one of 13 fixed offsets, resized.

    Differs from mmaction2's ``MultiScaleCrop`` in the offsets: Paddle's steps are
    ``(W - w) / 4`` as floats (Pillow rounds the crop box half to even) where mmaction2 floors
    them, and Paddle drops the corner/centre offsets that coincide when a step is zero.

    Args:
        target_size: output side (Paddle crops, then resizes to target x target).
        scales: crop scales of the short side.
        max_distort: largest allowed index gap between the width and height scales.
        more_fix_crop: 13 offsets (True) or 5.
        backend: 'pillow' (Paddle's default) or 'cv2' for the resize.
    """

    def __init__(self, target_size=256, scales=(1, .875, .75, .66), max_distort=1,
                 more_fix_crop=True, backend='pillow'):
        self.target_size = target_size
        self.scales = tuple(scales)
        self.max_distort = max_distort
        self.more_fix_crop = more_fix_crop
        self.backend = backend

    def transform(self, results):
        h, w = results['imgs'][0].shape[:2]
        pairs, offsets = paddle_multiscale_candidates(w, h, self.target_size, self.scales,
                                                      self.max_distort, self.more_fix_crop)
        cw, ch = pairs[np.random.randint(len(pairs))]
        cands = offsets(cw, ch)
        ox, oy = cands[np.random.randint(len(cands))]
        # Pillow's Image.crop rounds each box coordinate with Python's round().
        x0, y0, x1, y1 = (int(round(v)) for v in (ox, oy, ox + cw, oy + ch))
        _crop_all(results, x0, y0, x1 - x0, y1 - y0)
        size = (self.target_size, self.target_size)
        results['imgs'] = _resize_all(results['imgs'], size, self.backend)
        results['img_shape'] = size[::-1]
        return results

    def __repr__(self):
        return (f'{self.__class__.__name__}(target_size={self.target_size}, '
                f'scales={self.scales}, max_distort={self.max_distort})')


@TRANSFORMS.register_module()
class PaddleRandomCrop(BaseTransform):
    """Paddle's ``RandomCrop``: one square crop for all frames, offsets in [0, W - size].

    mmaction2's ``RandomCrop`` draws offsets in [0, W - size) (never the last position).

    Args:
        target_size: crop side.
    """

    def __init__(self, target_size=224):
        self.target_size = target_size

    def transform(self, results):
        h, w = results['imgs'][0].shape[:2]
        s = self.target_size
        if w < s or h < s:
            raise ValueError(f'{results.get("filename", "video")}: frames {w}x{h} are smaller '
                             f'than the {s}x{s} PaddleRandomCrop.')
        x = int(np.random.randint(0, w - s + 1))
        y = int(np.random.randint(0, h - s + 1))
        _crop_all(results, x, y, s, s)
        return results

    def __repr__(self):
        return f'{self.__class__.__name__}(target_size={self.target_size})'


@TRANSFORMS.register_module()
class PaddleCenterCrop(BaseTransform):
    """Paddle's ``CenterCrop``: offset ``round((W - size) / 2)``, Python's half-to-even round.

    mmaction2's ``CenterCrop`` floors; the two agree whenever W - size is even.

    Args:
        target_size: crop side.
    """

    def __init__(self, target_size=224):
        self.target_size = target_size

    def transform(self, results):
        h, w = results['imgs'][0].shape[:2]
        s = self.target_size
        if w < s or h < s:
            raise ValueError(f'{results.get("filename", "video")}: frames {w}x{h} are smaller '
                             f'than the {s}x{s} PaddleCenterCrop.')
        _crop_all(results, int(round((w - s) / 2.0)), int(round((h - s) / 2.0)), s, s)
        return results

    def __repr__(self):
        return f'{self.__class__.__name__}(target_size={self.target_size})'


@TRANSFORMS.register_module()
class PaddleThreeCrop(BaseTransform):
    """Paddle's ``GroupFullResSample``: left, right and centre crops at mid height.

    Offsets ``(0, 2*hs)``, ``(4*ws, 2*hs)``, ``(2*ws, 2*hs)`` with ``ws = (W - size) // 4``;
    mmaction2's ``ThreeCrop`` needs the crop to span the short side instead. Frames come out
    crop-major (all frames of crop 1, then crop 2, ...), optionally each followed by its flip.

    Args:
        crop_size: crop side.
        flip: also add the horizontally flipped crops.
    """

    def __init__(self, crop_size=224, flip=False):
        self.crop_size = crop_size
        self.flip = flip

    def transform(self, results):
        imgs = results['imgs']
        h, w = imgs[0].shape[:2]
        s = self.crop_size
        if w < s or h < s:
            raise ValueError(f'{results.get("filename", "video")}: frames {w}x{h} are smaller '
                             f'than the {s}x{s} PaddleThreeCrop.')
        ws, hs = (w - s) // 4, (h - s) // 4
        out, boxes = [], []
        for ox, oy in ((0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 2 * hs)):
            crops = [img[oy:oy + s, ox:ox + s] for img in imgs]
            out += crops
            boxes += [[ox, oy, ox + s, oy + s]] * len(imgs)
            if self.flip:
                out += [np.ascontiguousarray(c[:, ::-1]) for c in crops]
                boxes += [[ox, oy, ox + s, oy + s]] * len(imgs)
        results['imgs'] = out
        results['crop_bbox'] = np.array(boxes)
        results['img_shape'] = (s, s)
        return results

    def __repr__(self):
        return f'{self.__class__.__name__}(crop_size={self.crop_size}, flip={self.flip})'
