"""Pipeline steps for scene graphs: mmdet's annotation loading and packing plus relations.

mmdet's ``LoadAnnotations`` / ``PackDetInputs`` know boxes and labels, not relations; these
subclasses add ``gt_relations`` and keep the original-pixel GT boxes for the evaluator, so that
``SGGMetric`` matches against the very boxes SGB evaluates on (not boxes resized and back).
Transforms that drop or reorder boxes (crops, ``FilterAnnotations``) would break the relation
indices; ``PackSGGInputs`` checks them and says so. ``SGBResize`` is maskrcnn-benchmark's
``Resize(min_size, max_size)``, whose output size mmdet's ``Resize(keep_ratio=True)`` misses
by a pixel for about half of the images.
"""
from typing import Tuple

import numpy as np
import torch
from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs, Resize
from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import autocast_box_type
from mmengine.structures import InstanceData


@TRANSFORMS.register_module()
class LoadSGGAnnotations(LoadAnnotations):
    """mmdet's ``LoadAnnotations`` (boxes, labels) plus the relations of a VGSGGDataset.

    Adds ``results['gt_relations']`` (int64 [R, 3]: subject, object, predicate 1..P),
    ``results['ori_gt_bboxes']`` (float32 [N, 4], original pixels in the frame of
    ``image_data.json``, before any resize/flip: what SGB evaluates against) and
    ``results['ann_shape']`` = (height, width) of ``image_data.json``.

    A few VG images are not the size ``image_data.json`` gives. SGB builds its GT in the
    json's frame and resizes it with the image (``target.resize(image.size)``), so the model
    sees the boxes scaled by resized size / json size; here ``gt_bboxes`` are mapped from the
    json's frame to the loaded image's (``ori_shape``, so ``LoadImageFromFile`` must come
    first, as in every mmdet pipeline) and mmdet's ``Resize`` then does the rest.
    ``SGGMetric`` maps the predictions back to the json's frame (SGB's
    ``prediction.resize((json w, json h))``).

    Args:
        with_rel: load ``relations`` from the data_info.
        **kwargs: passed to mmdet's ``LoadAnnotations`` (``with_bbox``, ``with_label``...).
    """

    def __init__(self, with_rel: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.with_rel = with_rel

    def transform(self, results: dict) -> dict:
        results = super().transform(results)
        ann_shape = None
        if results.get('height') is not None and results.get('width') is not None:
            ann_shape = (int(results['height']), int(results['width']))
            results['ann_shape'] = ann_shape
        if self.with_bbox:
            boxes = results['gt_bboxes']
            boxes = boxes.numpy() if hasattr(boxes, 'numpy') else np.asarray(boxes)
            results['ori_gt_bboxes'] = np.array(boxes, dtype=np.float32).reshape(-1, 4)
            img_shape = results.get('ori_shape', results.get('img_shape'))
            if ann_shape is not None and img_shape is not None and \
                    tuple(img_shape[:2]) != ann_shape:
                sy, sx = img_shape[0] / ann_shape[0], img_shape[1] / ann_shape[1]
                if hasattr(results['gt_bboxes'], 'rescale_'):      # mmdet box type
                    results['gt_bboxes'].rescale_([sx, sy])
                else:                                               # box_type=None
                    results['gt_bboxes'] = results['gt_bboxes'] * np.array(
                        [sx, sy, sx, sy], dtype=np.float32)
        if self.with_rel:
            if 'relations' not in results:
                raise KeyError(f"LoadSGGAnnotations: the data_info of {results.get('img_path')} "
                               "has no 'relations'; use VGSGGDataset (or with_rel=False)")
            results['gt_relations'] = np.asarray(results['relations'],
                                                 dtype=np.int64).reshape(-1, 3)
        return results

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', with_rel={self.with_rel})'


@TRANSFORMS.register_module()
class PackSGGInputs(PackDetInputs):
    """mmdet's ``PackDetInputs`` plus ``data_sample.gt_relations``.

    ``gt_relations = InstanceData(pairs=LongTensor[R, 2], labels=LongTensor[R])`` with pair
    indices into ``gt_instances``. The metainfo also gets ``extra_meta_keys`` found in the
    results (``ori_gt_bboxes`` and ``ann_shape`` for the evaluator, ``sample_idx`` to order
    gathered results).

    Args:
        meta_keys: as mmdet's ``PackDetInputs`` (each must be present).
        extra_meta_keys: added to the metainfo when present.
    """

    def __init__(self,
                 meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor',
                            'flip', 'flip_direction'),
                 extra_meta_keys=('ori_gt_bboxes', 'ann_shape', 'sample_idx')) -> None:
        super().__init__(meta_keys=meta_keys)
        self.extra_meta_keys = tuple(extra_meta_keys)

    def transform(self, results: dict) -> dict:
        packed = super().transform(results)
        sample = packed['data_samples']
        sample.set_metainfo({k: results[k] for k in self.extra_meta_keys if k in results})
        if 'gt_relations' in results:
            rels = torch.as_tensor(np.asarray(results['gt_relations']),
                                   dtype=torch.long).reshape(-1, 3)
            num_boxes = len(sample.gt_instances) if 'bboxes' in sample.gt_instances else 0
            if len(sample.get('ignored_instances', [])) or (
                    len(rels) and int(rels[:, :2].max()) >= num_boxes):
                raise ValueError(
                    f"PackSGGInputs: {results.get('img_path')}: relations index boxes that "
                    f'are not in gt_instances ({num_boxes} boxes). A transform dropped or '
                    'ignored boxes; scene-graph pipelines must keep every box (no crops, no '
                    'FilterAnnotations, ignore_flag 0).')
            sample.gt_relations = InstanceData(pairs=rels[:, :2], labels=rels[:, 2])
        return packed

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', extra_meta_keys={self.extra_meta_keys})'


def sgb_resize_size(width: int, height: int, min_size: int = 600, max_size: int = 1000
                    ) -> Tuple[int, int]:
    """(height, width) maskrcnn-benchmark's ``Resize.get_size`` gives an image.

    The short side becomes ``min_size`` unless the long side would pass ``max_size``, then the
    short side is ``round(max_size * short / long)``; the other side is truncated
    (``int(size * long / short)``), where mmdet's ``Resize(keep_ratio=True)`` rounds.

    Args:
        width: image width.
        height: image height.
        min_size: ``INPUT.MIN_SIZE_TEST`` / ``MIN_SIZE_TRAIN`` (SGB: 600).
        max_size: ``INPUT.MAX_SIZE_TEST`` / ``MAX_SIZE_TRAIN`` (SGB: 1000).
    """
    size = min_size
    short, long = float(min(width, height)), float(max(width, height))
    if max_size is not None and long / short * size > max_size:
        size = int(round(max_size * short / long))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


@TRANSFORMS.register_module()
class SGBResize(Resize):
    """maskrcnn-benchmark's ``Resize(min_size, max_size)`` (SGB's input size) on mmdet's Resize.

    The output size is :func:`sgb_resize_size`; resizing the image, boxes and the
    ``scale_factor`` bookkeeping are mmdet's (``keep_ratio=False`` to that size). SGB resizes
    with PIL's bilinear filter (torchvision on a PIL image): use ``backend='pillow'`` and
    ``LoadImageFromFile(imdecode_backend='pillow')`` for SGB's very pixels. Written here
    because mmdet's keep-ratio rule rounds the long side where maskrcnn truncates it.

    Args:
        min_size: short side (SGB: 600).
        max_size: cap of the long side (SGB: 1000).
        backend: 'cv2' or 'pillow' (SGB's pixels: 'pillow').
        interpolation: as mmdet's Resize (SGB: 'bilinear').
        clip_object_border: as mmdet's Resize.
    """

    def __init__(self, min_size: int = 600, max_size: int = 1000, backend: str = 'cv2',
                 interpolation: str = 'bilinear', clip_object_border: bool = True) -> None:
        super().__init__(scale=(max_size, min_size), keep_ratio=False, backend=backend,
                         interpolation=interpolation, clip_object_border=clip_object_border)
        self.min_size, self.max_size = int(min_size), int(max_size)

    @autocast_box_type()
    def transform(self, results: dict) -> dict:
        """Resize to maskrcnn-benchmark's size (image, boxes, scale_factor)."""
        h, w = results['img'].shape[:2]
        oh, ow = sgb_resize_size(w, h, self.min_size, self.max_size)
        results['scale'] = (ow, oh)
        self._resize_img(results)
        self._resize_bboxes(results)
        self._resize_masks(results)
        self._resize_seg(results)
        self._record_homography_matrix(results)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(min_size={self.min_size}, max_size={self.max_size}, '
                f'backend={self.backend!r}, interpolation={self.interpolation!r})')
