"""Box overlaps with maskrcnn-benchmark's pixel convention, for the data and the metric.

Scene-Graph-Benchmark (SGB) measures boxes as maskrcnn-benchmark does: a box ``[x1, y1, x2,
y2]`` covers ``x2 - x1 + 1`` pixels (``boxlist_iou``, float32). mmdet's ``bbox_overlaps`` has
no ``+1``; ``mmcv.ops.bbox_overlaps(..., offset=1)`` gives the same float32 numbers on the CPU
(tests/sgg/test_evaluation.py checks it) but works on torch tensors through a compiled op,
while the dataset, the statistics and the metric core are plain numpy per image (the core is
meant to be checked against SGB's numpy code without torch). So this one function is written
by hand, with ``boxlist_iou``'s operations in its order.
"""
import numpy as np


def box_iou(boxes1, boxes2, offset: int = 1, aligned: bool = False,
            dtype=np.float32) -> np.ndarray:
    """IoU of xyxy boxes, maskrcnn-benchmark's ``boxlist_iou`` arithmetic (float32).

    ``inter / (area1 + area2 - inter)`` with widths ``x2 - x1 + offset``; 0/0 gives NaN (no
    overlap test ``iou > 0`` is true for it), as in SGB.

    Args:
        boxes1: [N, 4] boxes (any numeric dtype; cast to float32 as ``BoxList`` does).
        boxes2: [M, 4] boxes ([N, 4] when ``aligned``).
        offset: 1 for maskrcnn-benchmark's ``TO_REMOVE = 1`` (evaluation, relation filters),
            0 for SGB's ``bbox_overlaps(..., to_move=0)`` (frequency statistics).
        aligned: IoU of row i with row i ([N]) instead of every pair ([N, M]).
        dtype: float32 (``BoxList``); float64 for SGB's numpy ``bbox_overlaps``.
    """
    b1 = np.asarray(boxes1, dtype=dtype).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=dtype).reshape(-1, 4)
    off = b1.dtype.type(offset)
    area1 = (b1[:, 2] - b1[:, 0] + off) * (b1[:, 3] - b1[:, 1] + off)
    area2 = (b2[:, 2] - b2[:, 0] + off) * (b2[:, 3] - b2[:, 1] + off)
    if aligned:
        if len(b1) != len(b2):
            raise ValueError(f'box_iou(aligned=True) needs as many boxes1 as boxes2, got '
                             f'{len(b1)} and {len(b2)}')
        wh = np.maximum(np.minimum(b1[:, 2:], b2[:, 2:]) - np.maximum(b1[:, :2], b2[:, :2])
                        + off, 0)
        union = area1 + area2
    else:
        lt = np.maximum(b1[:, None, :2], b2[None, :, :2])
        rb = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
        wh = np.maximum(rb - lt + off, 0)
        union = area1[:, None] + area2[None, :]
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(divide='ignore', invalid='ignore'):
        return inter / (union - inter)
