"""BARON's boxes cache: confident bag centres of earlier visits to an image come back later."""
from typing import Dict, List, Optional, Sequence

import torch
from mmengine import dist
from torchvision.ops import nms

__all__ = ['BoxesCache']


class BoxesCache:
    """Per-image store of confident boxes, merged into the bag centres on later visits.

    From ``start_iter`` on, the centres of an image (proposals that passed the bag sampler's
    filters and NMS, with their scores) are merged with the boxes cached for that image on its
    earlier visits: boxes scoring above ``score_thr`` survive an NMS at ``nms_thr`` and become
    the centres. The merged set, moved back to the original image frame (undoing the resize and
    the flip of this visit), is what the cache keeps for the image (at most ``num_boxes``, best
    first). Updates are exchanged between processes every call, so each process sees the boxes
    of every visit, whichever process made it. As in the reference, nothing is saved in
    checkpoints (a resumed run refills the cache).

    Boxes live on the CPU in a dict keyed by image id, so the cache holds only the images
    visited so far (the reference keeps a [num_images, 300, 5] tensor on every GPU). Images
    without an ``img_id`` in their metainfo are passed through unchanged.

    Args:
        start_iter: first training iteration at which the cache is read and written.
        num_boxes: boxes kept per image.
        nms_thr: IoU threshold of the merge NMS.
        score_thr: boxes at or below this score are dropped (the best one is kept when none
            passes).
    """

    def __init__(self, start_iter: int = 10000, num_boxes: int = 300, nms_thr: float = 0.1,
                 score_thr: float = 0.85):
        if not (isinstance(start_iter, int) and start_iter >= 0):
            raise ValueError(f'boxes_cache.start_iter must be an int >= 0, got {start_iter!r}')
        if not (isinstance(num_boxes, int) and num_boxes > 0):
            raise ValueError(f'boxes_cache.num_boxes must be a positive int, got {num_boxes!r}')
        if not 0.0 <= nms_thr <= 1.0:
            raise ValueError(f'boxes_cache.nms_thr must lie in [0, 1], got {nms_thr}')
        self.start_iter = start_iter
        self.num_boxes = num_boxes
        self.nms_thr = float(nms_thr)
        self.score_thr = float(score_thr)
        self.boxes: Dict[int, torch.Tensor] = {}

    def __len__(self):
        return len(self.boxes)

    def _keep(self, boxes: torch.Tensor) -> torch.Tensor:
        """Score filter (the best box if none passes), then NMS; best first."""
        if boxes.shape[0] == 0:
            return boxes
        scores = boxes[:, 4]
        passed = scores > self.score_thr
        boxes = boxes[passed] if passed.any() else boxes[scores.argmax()][None]
        return boxes[nms(boxes[:, :4].float(), boxes[:, 4].float(), self.nms_thr)]

    @torch.no_grad()
    def merge(self, centres: Sequence[torch.Tensor], metas: Sequence[dict],
              iteration: int) -> List[torch.Tensor]:
        """Centres [n, 5] (xyxy + score, this visit's frame) of each image -> merged centres.

        Must be called by every process at every iteration (it exchanges updates), with the
        same ``iteration``. Before ``start_iter`` it returns ``centres`` untouched.
        """
        if len(centres) != len(metas):
            raise ValueError(f'{len(centres)} centre tensors for {len(metas)} images')
        if iteration < self.start_iter:
            return list(centres)
        out, updates = [], []
        for boxes, meta in zip(centres, metas):
            if boxes.dim() != 2 or boxes.shape[1] != 5:
                raise ValueError(f'centres must be [n, 5] (xyxy + score), got '
                                 f'{tuple(boxes.shape)}')
            img_id = meta.get('img_id') if hasattr(meta, 'get') else None
            if img_id is None:
                out.append(boxes)
                continue
            img_id = int(img_id)
            cached = self.boxes.get(img_id, boxes.new_zeros(0, 5).cpu())
            cached_here = _to_visit_frame(cached.to(boxes.device, torch.float32), meta)
            out.append(self._keep(torch.cat([cached_here, boxes.float()])))
            merged = self._keep(torch.cat([cached, _to_original_frame(boxes.float(), meta)
                                           .cpu()]))
            updates.append((img_id, merged[:self.num_boxes].clone()))
        self._store(updates)
        return out

    def _store(self, updates):
        # every process learns every other process's boxes (the reference all_gathers too)
        if dist.get_world_size() > 1:
            gathered = dist.all_gather_object(updates)
            updates = [u for part in gathered for u in part]
        for img_id, boxes in updates:
            self.boxes[img_id] = boxes

    def __repr__(self):
        return (f'BoxesCache(start_iter={self.start_iter}, num_boxes={self.num_boxes}, '
                f'nms_thr={self.nms_thr}, score_thr={self.score_thr}, images={len(self)})')


def _scale_and_flip(meta):
    scale = meta.get('scale_factor') if hasattr(meta, 'get') else None
    scale = (1.0, 1.0) if scale is None else tuple(float(s) for s in scale[:2])
    flip = bool(meta.get('flip', False)) if hasattr(meta, 'get') else False
    direction = meta.get('flip_direction') if flip else None
    return scale, flip, direction


def _flip(boxes, img_shape, direction):
    from mmdet.structures.bbox import bbox_flip
    if img_shape is None:
        raise ValueError('a flipped image needs img_shape in its metainfo to flip boxes back')
    return bbox_flip(boxes, tuple(img_shape[:2]), direction)


def _to_visit_frame(boxes: torch.Tensor, meta: dict) -> torch.Tensor:
    """Original-image boxes [n, 5] -> this visit's frame (resized, then flipped)."""
    (sx, sy), flip, direction = _scale_and_flip(meta)
    xyxy = boxes[:, :4] * boxes.new_tensor([sx, sy, sx, sy])
    if flip and boxes.shape[0]:
        xyxy = _flip(xyxy, meta.get('img_shape'), direction)
    return torch.cat([xyxy, boxes[:, 4:]], 1)


def _to_original_frame(boxes: torch.Tensor, meta: dict) -> torch.Tensor:
    """This visit's boxes [n, 5] -> the original image frame (unflipped, then unscaled)."""
    (sx, sy), flip, direction = _scale_and_flip(meta)
    xyxy = boxes[:, :4]
    if flip and boxes.shape[0]:
        xyxy = _flip(xyxy, meta.get('img_shape'), direction)
    xyxy = xyxy / xyxy.new_tensor([sx, sy, sx, sy])
    return torch.cat([xyxy, boxes[:, 4:]], 1)


def build_boxes_cache(cfg: Optional[dict]) -> Optional[BoxesCache]:
    """``None`` or a :class:`BoxesCache` from its kwargs dict."""
    if cfg is None:
        return None
    if isinstance(cfg, BoxesCache):
        return cfg
    if not hasattr(cfg, 'keys'):
        raise TypeError(f'boxes_cache must be a dict of BoxesCache kwargs, got {cfg!r}')
    return BoxesCache(**dict(cfg))
