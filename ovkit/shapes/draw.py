"""Drawing helpers shared by the shapes writers: shapes, backgrounds, colours."""
import math

import numpy as np
from PIL import Image

__all__ = ['PALETTE', 'draw_shape', 'background']

PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 165, 0), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (128, 128, 0)]


def _polygon(cls, cx, cy, r):
    """Vertices of a shape centred at (cx, cy) with circumradius r."""
    if cls == 'square':
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if cls == 'triangle':
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if cls == 'diamond':
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if cls == 'hexagon':
        return [(cx + r * math.cos(a), cy + r * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 7)[:-1]]
    if cls == 'star':
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    if cls == 'cross':
        t = r / 3
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
                (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
                (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(cls)


def draw_shape(draw, cls, cx, cy, r, color):
    """Draw one shape; returns its tight box [x1, y1, x2, y2]."""
    if cls in ('circle', 'ring'):
        box = [cx - r, cy - r, cx + r, cy + r]
        if cls == 'circle':
            draw.ellipse(box, fill=color)
        else:
            draw.ellipse(box, outline=color, width=max(2, int(r / 3)))
        return box
    pts = _polygon(cls, cx, cy, r)
    draw.polygon(pts, fill=color)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [min(xs), min(ys), max(xs), max(ys)]


def background(rng, size):
    """A smooth random gradient plus noise, so the detector cannot key on a flat colour."""
    h = w = size
    base = rng.integers(0, 90, size=3)
    gy, gx = np.mgrid[0:h, 0:w] / size
    direction = rng.uniform(-40, 40, size=(2, 3))
    img = base + gy[..., None] * direction[0] + gx[..., None] * direction[1]
    img = img + rng.normal(0, 6, size=(h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))




def place_shapes(rng, size, count):
    """Centres and radii of up to ``count`` non-overlapping shapes in a ``size`` square scene,
    one at a time (20 tries each; a shape that finds no room is skipped). A generator, so the
    caller's own random draws for each shape (class, colour) interleave with the placement
    draws in one fixed order: the same seed gives the same scene."""
    placed = []
    for _ in range(count):
        for _try in range(20):
            r = float(rng.uniform(size * 0.08, size * 0.2))
            cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, size=2))
            if all(math.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                break
        else:
            continue
        yield cx, cy, r
        placed.append((cx, cy, r))
