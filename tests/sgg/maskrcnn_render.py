"""maskrcnn-benchmark's detector geometry rendered from its formulas, for the sgg tests.

Independent of ``ovkit.sgg.sgb_geometry``: each function follows the step order of
maskrcnn-benchmark (as used by Scene-Graph-Benchmark) -- ``rpn/anchor_generator.py``
(``generate_anchors``, ``grid_anchors``), ``box_coder.py`` (``BoxCoder``),
``rpn/inference.py`` (``RPNPostProcessor``), ``structures/bounding_box.py``
(``clip_to_image``, ``area``), ``csrc/cpu/nms_cpu.cpp``, ``poolers.py`` (``LevelMapper``) and
``csrc/cpu/ROIAlign_cpu.cpp`` -- in plain numpy / torch loops.
"""
import math

import numpy as np
import torch


# ----------------------------------------------------------------- anchors
def _whctrs(anchor):
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws, hs, x_ctr, y_ctr):
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1),
                      x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def generate_anchors(stride, sizes, aspect_ratios):
    """Cell anchors [A, 4] float32: ratio enumeration on the base window, then scales."""
    scales = np.array(sizes, dtype=np.float64) / stride
    ratios = np.array(aspect_ratios, dtype=np.float64)
    anchor = np.array([1, 1, stride, stride], dtype=np.float64) - 1
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    ws = np.round(np.sqrt(w * h / ratios))
    hs = np.round(ws * ratios)
    per_ratio = _mkanchors(ws, hs, x_ctr, y_ctr)
    out = []
    for a in per_ratio:
        w, h, x_ctr, y_ctr = _whctrs(a)
        out.append(_mkanchors(w * scales, h * scales, x_ctr, y_ctr))
    return torch.from_numpy(np.vstack(out)).float()


def grid_anchors(grid_size, stride, cell):
    """All anchors of a level: location-major, then the cell anchors."""
    gh, gw = grid_size
    sx = torch.arange(0, gw * stride, step=stride, dtype=torch.float32)
    sy = torch.arange(0, gh * stride, step=stride, dtype=torch.float32)
    shift_y, shift_x = torch.meshgrid(sy, sx, indexing='ij')
    shifts = torch.stack((shift_x.reshape(-1), shift_y.reshape(-1)) * 2, dim=1)
    return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)


# ----------------------------------------------------------------- boxes
def decode(rel_codes, boxes, weights, clip=math.log(1000. / 16)):
    boxes = boxes.to(rel_codes.dtype)
    widths = boxes[:, 2] - boxes[:, 0] + 1
    heights = boxes[:, 3] - boxes[:, 1] + 1
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx, dy = rel_codes[:, 0::4] / wx, rel_codes[:, 1::4] / wy
    dw = torch.clamp(rel_codes[:, 2::4] / ww, max=clip)
    dh = torch.clamp(rel_codes[:, 3::4] / wh, max=clip)
    pcx = dx * widths[:, None] + ctr_x[:, None]
    pcy = dy * heights[:, None] + ctr_y[:, None]
    pw, ph = torch.exp(dw) * widths[:, None], torch.exp(dh) * heights[:, None]
    out = torch.zeros_like(rel_codes)
    out[:, 0::4] = pcx - 0.5 * pw
    out[:, 1::4] = pcy - 0.5 * ph
    out[:, 2::4] = pcx + 0.5 * pw - 1
    out[:, 3::4] = pcy + 0.5 * ph - 1
    return out


def encode(reference, proposals, weights):
    ex_w = proposals[:, 2] - proposals[:, 0] + 1
    ex_h = proposals[:, 3] - proposals[:, 1] + 1
    ex_x, ex_y = proposals[:, 0] + 0.5 * ex_w, proposals[:, 1] + 0.5 * ex_h
    gt_w = reference[:, 2] - reference[:, 0] + 1
    gt_h = reference[:, 3] - reference[:, 1] + 1
    gt_x, gt_y = reference[:, 0] + 0.5 * gt_w, reference[:, 1] + 0.5 * gt_h
    wx, wy, ww, wh = weights
    return torch.stack((wx * (gt_x - ex_x) / ex_w, wy * (gt_y - ex_y) / ex_h,
                        ww * torch.log(gt_w / ex_w), wh * torch.log(gt_h / ex_h)), dim=1)


def clip_to_image(boxes, width, height):
    boxes = boxes.clone()
    boxes[:, 0::4].clamp_(min=0, max=width - 1)
    boxes[:, 1::4].clamp_(min=0, max=height - 1)
    boxes[:, 2::4].clamp_(min=0, max=width - 1)
    boxes[:, 3::4].clamp_(min=0, max=height - 1)
    return boxes


def nms(boxes, scores, thresh):
    """nms_cpu.cpp: +1 areas, suppress when IoU >= thresh; kept indices, best first."""
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    order = scores.sort(0, descending=True)[1]
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        xx1 = torch.maximum(boxes[i, 0], boxes[:, 0])
        yy1 = torch.maximum(boxes[i, 1], boxes[:, 1])
        xx2 = torch.minimum(boxes[i, 2], boxes[:, 2])
        yy2 = torch.minimum(boxes[i, 3], boxes[:, 3])
        inter = (xx2 - xx1 + 1).clamp(min=0) * (yy2 - yy1 + 1).clamp(min=0)
        suppressed |= inter / (areas[i] + areas - inter) >= thresh
    return torch.tensor(keep, dtype=torch.long)


def rpn_proposals(objectness, box_regression, cell_anchors, strides, image_size,
                  pre_nms_top_n, post_nms_top_n, fpn_post_nms_top_n, nms_thresh, min_size=0):
    """RPNPostProcessor (test mode, one image): per level top-k, decode, clip, remove small,
    NMS, keep post_nms_top_n; then the best fpn_post_nms_top_n over all levels.

    Args:
        objectness: per level [A, H, W] logits.
        box_regression: per level [4A, H, W].
        image_size: (height, width) of the (resized) image.
    """
    height, width = image_size
    boxes_all, scores_all = [], []
    for obj, reg, cell, stride in zip(objectness, box_regression, cell_anchors, strides):
        a, h, w = obj.shape
        anchors = grid_anchors((h, w), stride, cell)
        obj = obj.view(a, 1, h, w).permute(2, 3, 0, 1).reshape(-1).sigmoid()
        reg = reg.view(a, 4, h, w).permute(2, 3, 0, 1).reshape(-1, 4)
        obj, idx = obj.topk(min(pre_nms_top_n, len(obj)), sorted=True)
        boxes = clip_to_image(decode(reg[idx], anchors[idx], (1., 1., 1., 1.)), width, height)
        keep = ((boxes[:, 2] - boxes[:, 0] + 1 >= min_size) &
                (boxes[:, 3] - boxes[:, 1] + 1 >= min_size))
        boxes, obj = boxes[keep], obj[keep]
        keep = nms(boxes, obj, nms_thresh)[:post_nms_top_n]
        boxes_all.append(boxes[keep])
        scores_all.append(obj[keep])
    boxes, scores = torch.cat(boxes_all), torch.cat(scores_all)
    scores, idx = scores.topk(min(fpn_post_nms_top_n, len(scores)), sorted=True)
    return boxes[idx], scores


# ----------------------------------------------------------------- pooling
def level_mapper(boxes, k_min=2, k_max=5, s0=224, lvl0=4, eps=1e-6):
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    lvl = torch.floor(lvl0 + torch.log2(torch.sqrt(area) / s0 + eps))
    return torch.clamp(lvl, min=k_min, max=k_max).to(torch.int64) - k_min


def roi_align(feature, boxes, spatial_scale, out=7, sampling_ratio=2):
    """ROIAlign_cpu.cpp (maskrcnn's, no half-pixel shift): [K, C, out, out] for [C, H, W]."""
    _, height, width = feature.shape
    res = []
    for box in boxes:
        x1, y1, x2, y2 = (box * spatial_scale).tolist()
        bin_w, bin_h = max(x2 - x1, 1.) / out, max(y2 - y1, 1.) / out
        grid = torch.arange(out * sampling_ratio, dtype=torch.float64)
        ph, iy = grid // sampling_ratio, grid % sampling_ratio
        ys = y1 + ph * bin_h + (iy + .5) * bin_h / sampling_ratio
        xs = x1 + ph * bin_w + (iy + .5) * bin_w / sampling_ratio

        def axis(v, size):
            valid = (v >= -1.0) & (v <= size)
            v = v.clamp(min=0)
            low = v.floor().long()
            at_end = low >= size - 1
            low = torch.where(at_end, torch.full_like(low, size - 1), low)
            high = torch.where(at_end, low, low + 1)
            v = torch.where(at_end, low.double(), v)
            frac = v - low
            return valid, low, high, frac

        vy, yl, yh, ly = axis(ys, height)
        vx, xl, xh, lx = axis(xs, width)
        hy, hx = 1 - ly, 1 - lx
        f = feature.double()
        val = (hy[:, None] * hx[None] * f[:, yl[:, None], xl[None]] +
               hy[:, None] * lx[None] * f[:, yl[:, None], xh[None]] +
               ly[:, None] * hx[None] * f[:, yh[:, None], xl[None]] +
               ly[:, None] * lx[None] * f[:, yh[:, None], xh[None]])
        val = val * (vy[:, None] & vx[None])
        c = feature.shape[0]
        val = val.view(c, out, sampling_ratio, out, sampling_ratio).mean((2, 4))
        res.append(val.float())
    return torch.stack(res)
