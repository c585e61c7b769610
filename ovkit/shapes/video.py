"""Short shapes videos whose class is decided by motion alone, with mmaction2 list files.

Each video shows one random shape on a static random background. Its class is how it moves:
``move_up``, ``move_down``, ``grow`` or ``shrink``. Each pair is the time reversal of the
other (start and end states are drawn from the same distributions), so the set of frames of an
``up`` video is that of some ``down`` video: a model that averages frame features without
temporal interaction (2D, no shift) cannot separate the pair, and is capped near 50%, while a
temporal model can reach 100%. The motions are unchanged by a horizontal flip, so the usual
flip augmentation keeps the labels right.

Layout under ``<out_dir>/video``::

    videos/<class>/<class>_<k>.avi     MPEG-4 Part 2 in AVI, like UCF101
    train_list.txt, val_list.txt       "<class>/<class>_<k>.avi <label>" (mmaction2)
    train_list_nosuffix.txt, ...       the same without ".avi" (PaddleVideo's UCF101 style)
    classes.txt                        class names, one per line
"""
import os
import os.path as osp

import numpy as np
from PIL import ImageDraw

from .classes import SHAPE_CLASSES
from .draw import PALETTE, background, draw_shape

__all__ = ['VIDEO_CLASSES', 'make_video_shapes', 'write']

VIDEO_CLASSES = ('move_up', 'move_down', 'grow', 'shrink')


def _trajectory(cls, rng, size, num_frames):
    """Per-frame (cx, cy, r) of one video of motion class ``cls``."""
    t = np.linspace(0.0, 1.0, num_frames)
    if cls in ('move_up', 'move_down'):
        low, high = rng.uniform(0.22, 0.3) * size, rng.uniform(0.7, 0.78) * size
        start, end = (high, low) if cls == 'move_up' else (low, high)
        cy = start + (end - start) * t
        cx = np.full(num_frames, size / 2 + rng.uniform(-0.08, 0.08) * size)
        r = np.full(num_frames, rng.uniform(0.12, 0.17) * size)
    else:
        small, big = rng.uniform(0.07, 0.1) * size, rng.uniform(0.3, 0.36) * size
        start, end = (small, big) if cls == 'grow' else (big, small)
        r = start + (end - start) * t
        c = size / 2 + rng.uniform(-0.06, 0.06, 2) * size
        cx, cy = np.full(num_frames, c[0]), np.full(num_frames, c[1])
    return cx, cy, r


def _write_avi(path, frames, fps):
    import av
    with av.open(path, 'w', format='avi') as container:
        stream = container.add_stream('mpeg4', rate=fps)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = 'yuv420p'
        stream.bit_rate = 800_000
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format='rgb24')):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_video_shapes(root, per_class_train=24, per_class_val=12, num_frames=16, size=48, fps=8,
                      seed=0):
    """Write the motion-classified shapes videos and their list files under ``root``.

    Args:
        root: output folder.
        per_class_train: training videos per class.
        per_class_val: validation videos per class.
        num_frames: frames per video.
        size: frame side in pixels (even).
        fps: frame rate stored in the files.
        seed: random seed; the same seed writes the same videos.

    Returns:
        dict: paths of the written list files and folders.
    """
    rng = np.random.default_rng(seed + 2)
    lists = {}
    for split, n in (('train', per_class_train), ('val', per_class_val)):
        lines = []
        for label, cls in enumerate(VIDEO_CLASSES):
            os.makedirs(osp.join(root, 'videos', cls), exist_ok=True)
            for k in range(n):
                shape = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
                colour = tuple(int(v) for v in np.clip(
                    np.array(PALETTE[int(rng.integers(len(PALETTE)))]) +
                    rng.integers(-25, 25, 3), 0, 255))
                bg = background(rng, size)
                frames = []
                for cx, cy, r in zip(*_trajectory(cls, rng, size, num_frames)):
                    img = bg.copy()
                    draw_shape(ImageDraw.Draw(img), shape, float(cx), float(cy), float(r), colour)
                    frames.append(np.asarray(img))
                rel = f'{cls}/{cls}_{split}_{k:03d}'
                _write_avi(osp.join(root, 'videos', rel + '.avi'), frames, fps)
                lines.append((rel, label))
        for tag, ext in (('', '.avi'), ('_nosuffix', '')):
            path = osp.join(root, f'{split}_list{tag}.txt')
            with open(path, 'w') as f:
                f.writelines(f'{rel}{ext} {label}\n' for rel, label in lines)
            lists[f'{split}_list{tag}'] = path
    with open(osp.join(root, 'classes.txt'), 'w') as f:
        f.write('\n'.join(VIDEO_CLASSES) + '\n')
    return dict(videos=osp.join(root, 'videos'), classes=osp.join(root, 'classes.txt'), **lists)


def write(out_dir, seed=0, per_class_train=24, per_class_val=12, num_frames=16, size=48):
    """Writer entry of :data:`ovkit.shapes.WRITERS`: the videos under ``out_dir/video``.

    Args:
        out_dir: the shapes root (e.g. ``data/shapes``).
        seed: random seed; the same seed writes the same files.
        per_class_train: training videos per class.
        per_class_val: validation videos per class.
        num_frames: frames per video.
        size: frame side in pixels.
    """
    return make_video_shapes(osp.join(out_dir, 'video'), per_class_train, per_class_val,
                             num_frames, size, seed=seed)
