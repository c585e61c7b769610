"""Visual Genome VG150 scene graphs (the ``VG-SGG-with-attri.h5`` split of SGB) for mmdet.

Reads the three files of Scene-Graph-Benchmark.pytorch (``visual_genome.py``) with SGB's splits,
filters and box conversion, but from config keys and without SGB's ``len(files) == 108073``
assert: a missing or short image folder is one clear error naming the count and the first
missing file. mmdet has no scene-graph dataset; the loading is written here, the rest
(serialisation, pipeline, ``get_cat_ids``) is mmdet's ``BaseDetDataset``.
"""
import json
import logging
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from mmdet.datasets import BaseDetDataset
from mmdet.registry import DATASETS
from mmengine.logging import print_log

from .boxes import box_iou

# image_data.json lists these four images, the h5 does not (SGB's load_image_filenames)
CORRUPTED_IMAGES = ('1592.jpg', '1722.jpg', '4616.jpg', '4617.jpg')
SPLITS = ('train', 'val', 'test')

WHERE = {
    'ann_file': 'VG-SGG-with-attri.h5 is published with Scene-Graph-Benchmark.pytorch '
                '(DATASET.md: "Download the scene graphs")',
    'dict_file': 'VG-SGG-dicts-with-attri.json is in Scene-Graph-Benchmark.pytorch at '
                 'datasets/vg/VG-SGG-dicts-with-attri.json',
    'image_file': 'image_data.json is in Scene-Graph-Benchmark.pytorch at '
                  'datasets/vg/image_data.json',
    'img': 'the Visual Genome images are published by Stanford as images.zip and images2.zip '
           '(VG_100K and VG_100K_2); extract both into the one folder data_prefix.img',
}


def _require_file(path: str, key: str) -> None:
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'VGSGGDataset: {key}={path!r} does not exist. {WHERE[key]}; see docs/sgg.md. '
            f'Set data_root / {key} in the dataset config (or --cfg-options).')


def load_vg_dicts(dict_file: str):
    """Object and predicate names from ``VG-SGG-dicts-with-attri.json``.

    Args:
        dict_file: path of the json (``label_to_idx`` / ``predicate_to_idx``, 1-based).

    Returns:
        (classes, predicates): C object names in index order (no background), and P + 1
        predicate names with ``'__background__'`` first.
    """
    with open(dict_file) as f:
        info = json.load(f)
    try:
        label_to_idx, pred_to_idx = info['label_to_idx'], info['predicate_to_idx']
    except KeyError as e:
        raise KeyError(f'{dict_file}: no {e} key; expected SGB\'s VG-SGG-dicts-with-attri.json '
                       '(label_to_idx, predicate_to_idx, ...)') from None
    classes = tuple(sorted(label_to_idx, key=lambda k: label_to_idx[k]))
    predicates = ('__background__', ) + tuple(sorted(pred_to_idx, key=lambda k: pred_to_idx[k]))
    if [label_to_idx[c] for c in classes] != list(range(1, len(classes) + 1)) or \
            [pred_to_idx[p] for p in predicates[1:]] != list(range(1, len(predicates))):
        raise ValueError(f'{dict_file}: label_to_idx / predicate_to_idx must be 1..N without '
                         'gaps')
    return classes, predicates


def load_vg_graphs(ann_file: str, split: str, num_im: int = -1, num_val_im: int = 5000,
                   filter_empty_rels: bool = True, filter_non_overlap: bool = False,
                   box_scale: int = 1024) -> dict:
    """SGB's ``load_graphs``: the images of a split with boxes at ``box_scale``, xyxy.

    Args:
        ann_file: ``VG-SGG-with-attri.h5``.
        split: 'train', 'val' (the first ``num_val_im`` of h5 split 0) or 'test' (split 2).
        num_im: keep the first ``num_im`` images of split 0 / 2 (-1: all).
        num_val_im: size of val, cut from the start of split 0; train is the rest.
        filter_empty_rels: drop images without relations.
        filter_non_overlap: train only: keep relations whose boxes overlap (+1 IoU > 0),
            drop images left without any.
        box_scale: 1024 or 512, the h5 box set ``boxes_{box_scale}``.

    Returns:
        dict with ``index`` (h5 image rows), ``boxes`` (list of [N, 4] xyxy at box_scale, in
        the h5 dtype, as SGB), ``labels`` (list of [N] 1..C), ``relations`` (list of [R, 3]
        (subject, object, predicate 1..P) with indices into the image's boxes).
    """
    import h5py
    if split not in SPLITS:
        raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    with h5py.File(ann_file, 'r') as h5:
        data_split = h5['split'][:]
        first_box, last_box = h5['img_to_first_box'][:], h5['img_to_last_box'][:]
        first_rel, last_rel = h5['img_to_first_rel'][:], h5['img_to_last_rel'][:]
        key = f'boxes_{box_scale}'
        if key not in h5:
            raise KeyError(f'{ann_file}: no {key!r} dataset (box_scale={box_scale}); the SGB '
                           f'h5 has boxes_1024 and boxes_512')
        all_boxes = h5[key][:]
        all_labels = h5['labels'][:, 0]
        all_rels = h5['relationships'][:]
        all_preds = h5['predicates'][:, 0]

    mask = data_split == (2 if split == 'test' else 0)
    mask &= first_box >= 0
    if filter_empty_rels:
        mask &= first_rel >= 0
    index = np.flatnonzero(mask)
    if num_im > -1:
        index = index[:num_im]
    if num_val_im > 0:
        if split == 'val':
            index = index[:num_val_im]
        elif split == 'train':
            index = index[num_val_im:]

    # cx,cy,w,h -> x1,y1,x2,y2 in the h5's dtype, exactly as SGB (integer boxes truncate)
    all_boxes[:, :2] = all_boxes[:, :2] - all_boxes[:, 2:] / 2
    all_boxes[:, 2:] = all_boxes[:, :2] + all_boxes[:, 2:]

    keep_index, boxes, labels, relations = [], [], [], []
    for i in index:
        b0, b1 = first_box[i], last_box[i] + 1
        boxes_i = all_boxes[b0:b1]
        if first_rel[i] >= 0:
            r0, r1 = first_rel[i], last_rel[i] + 1
            obj = all_rels[r0:r1] - b0
            if obj.size and (obj.min() < 0 or obj.max() >= len(boxes_i)):
                raise ValueError(f'{ann_file}: image row {i} has relations pointing outside '
                                 f'its boxes {b0}..{b1 - 1}')
            rels = np.column_stack((obj, all_preds[r0:r1])).astype(np.int64)
        else:
            rels = np.zeros((0, 3), dtype=np.int64)
        if filter_non_overlap and split == 'train':
            # SGB: boxlist_iou(BoxList(boxes_i), ...) > 0, float32 with +1 widths
            rels = rels[box_iou(boxes_i, boxes_i)[rels[:, 0], rels[:, 1]] > 0]
            if len(rels) == 0:
                continue
        keep_index.append(i)
        boxes.append(boxes_i)
        labels.append(all_labels[b0:b1].astype(np.int64))
        relations.append(rels)
    return dict(index=np.asarray(keep_index, dtype=np.int64), boxes=boxes, labels=labels,
                relations=relations, num_h5_images=len(data_split))


def sample_one_predicate_per_pair(relations: np.ndarray, rng=np.random) -> np.ndarray:
    """SGB's train-time rule: one predicate drawn uniformly for each (subject, object) pair.

    Pairs keep the order of their first appearance (as SGB's ``defaultdict``).

    Args:
        relations: [R, 3] (subject, object, predicate).
        rng: ``np.random`` or a ``np.random.Generator``.
    """
    if len(relations) < 2:
        return relations
    keys = (relations[:, 0].astype(np.int64) << 32) | relations[:, 1].astype(np.int64)
    perm = rng.permutation(len(relations))
    # the first row of each pair in a random order is a uniform draw within the pair
    _, first_in_perm = np.unique(keys[perm], return_index=True)
    _, first_orig = np.unique(keys, return_index=True)
    chosen = perm[first_in_perm][np.argsort(first_orig)]
    return relations[chosen]


@DATASETS.register_module()
class VGSGGDataset(BaseDetDataset):
    """VG150 scene graphs: SGB's splits, filters and boxes, in mmdet's data_info layout.

    Each data_info has ``img_path``, ``img_id``, ``width``, ``height``, ``instances``
    (``bbox`` xyxy in original pixels, ``bbox_label`` 0..C-1, ``ignore_flag`` 0) and
    ``relations`` int64 [R, 3] (subject index, object index, predicate 1..P). ``metainfo``
    has ``classes`` (C names) and ``predicates`` (P + 1 names, ``'__background__'`` first).

    Boxes: h5 cx,cy,w,h at ``box_scale`` -> x1 = cx - w/2, x2 = x1 + w (in the h5 dtype, as
    SGB), times ``max(W, H) / box_scale``, clipped to [0, W - 1] x [0, H - 1] (maskrcnn's
    ``clip_to_image``). Train drops boxes that clipping empties (with their relations); val and
    test keep every box so that GT indices match SGB's evaluation.

    Args:
        ann_file: ``VG-SGG-with-attri.h5`` (relative to ``data_root``).
        dict_file: ``VG-SGG-dicts-with-attri.json`` (relative to ``data_root``).
        image_file: ``image_data.json`` (relative to ``data_root``).
        split: 'train', 'val' or 'test'.
        num_im: use only the first ``num_im`` images of the h5 split (-1: all).
        num_val_im: images of split 0 that form val (SGB: 5000).
        filter_empty_rels: drop images without relations (relation models: True).
        filter_non_overlap: train only, SGDet with SGB's REQUIRE_BOX_OVERLAP: keep only
            relations whose boxes overlap.
        filter_duplicate_rels: one random predicate per (subject, object) pair at every fetch;
            None means ``split == 'train'`` (SGB). Test GT always keeps duplicates.
        box_scale: which h5 box set to read (1024 or 512).
        check_images: stat every image file of the split at load time: a missing folder, or
            (val/test) any missing image, or (train) more than ``max_missing_ratio`` of them,
            is one error naming the count and the first missing file.
        max_missing_ratio: train only: up to this fraction of missing images is a warning;
            those images are then skipped and counted when drawn (``ovkit.engine``'s
            ``SkipBadSamplesHook``, like corrupt files), as the evaluation never skips.
        data_prefix: ``dict(img=<image folder>)`` relative to ``data_root``.
        **kwargs: passed to mmdet's ``BaseDetDataset``.
    """

    METAINFO = dict(classes=(), predicates=())

    def __init__(self,
                 ann_file: str = 'VG-SGG-with-attri.h5',
                 dict_file: str = 'VG-SGG-dicts-with-attri.json',
                 image_file: str = 'image_data.json',
                 split: str = 'train',
                 num_im: int = -1,
                 num_val_im: int = 5000,
                 filter_empty_rels: bool = True,
                 filter_non_overlap: bool = False,
                 filter_duplicate_rels: Optional[bool] = None,
                 box_scale: int = 1024,
                 check_images: bool = True,
                 max_missing_ratio: float = 0.01,
                 data_root: str = '',
                 data_prefix: dict = dict(img='VG_100K'),
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        if split not in SPLITS:
            raise ValueError(f"VGSGGDataset: split must be one of {SPLITS}, got {split!r}")
        self.split = split
        self.num_im = num_im
        self.num_val_im = num_val_im
        self.filter_empty_rels = filter_empty_rels
        self.filter_non_overlap = filter_non_overlap and split == 'train'
        self.filter_duplicate_rels = (split == 'train' if filter_duplicate_rels is None
                                      else bool(filter_duplicate_rels) and split == 'train')
        self.box_scale = box_scale
        self.check_images = check_images
        self.max_missing_ratio = max_missing_ratio
        self.dict_file = self._under_root(dict_file, data_root)
        self.image_file = self._under_root(image_file, data_root)
        _require_file(self.dict_file, 'dict_file')
        classes, predicates = load_vg_dicts(self.dict_file)
        metainfo = dict(metainfo or {})
        for key, names in (('classes', classes), ('predicates', predicates)):
            given = metainfo.get(key)
            if given is not None and tuple(given) not in ((), tuple(names)):
                raise ValueError(f'VGSGGDataset: metainfo.{key} differs from {self.dict_file}; '
                                 f'the names come from dict_file, drop metainfo.{key}')
            metainfo[key] = names
        super().__init__(ann_file=ann_file, data_root=data_root, data_prefix=data_prefix,
                         metainfo=metainfo, **kwargs)

    @staticmethod
    def _under_root(path: str, data_root: str) -> str:
        return path if not data_root or osp.isabs(path) else osp.join(data_root, path)

    def _image_info(self, num_h5_images: int) -> List[dict]:
        """image_data.json aligned with the h5 rows (SGB drops its four corrupted files)."""
        _require_file(self.image_file, 'image_file')
        with open(self.image_file) as f:
            im_data = json.load(f)
        if len(im_data) != num_h5_images:
            kept = [im for im in im_data if f"{im['image_id']}.jpg" not in CORRUPTED_IMAGES]
            if len(kept) == num_h5_images:
                im_data = kept
            else:
                raise ValueError(
                    f'VGSGGDataset: image_file {self.image_file} lists {len(im_data)} images '
                    f'({len(kept)} without SGB\'s corrupted {", ".join(CORRUPTED_IMAGES)}) but '
                    f'ann_file {self.ann_file} has {num_h5_images}; the two files must come '
                    'from the same release (see docs/sgg.md)')
        return im_data

    def load_data_list(self) -> List[dict]:
        """Read the h5 / json files and build one data_info per image of the split."""
        _require_file(self.ann_file, 'ann_file')
        graphs = load_vg_graphs(self.ann_file, self.split, self.num_im, self.num_val_im,
                                self.filter_empty_rels, self.filter_non_overlap, self.box_scale)
        im_data = self._image_info(graphs['num_h5_images'])
        img_dir = self.data_prefix.get('img', '')
        train = self.split == 'train'
        data_list = []
        for i, boxes, labels, rels in zip(graphs['index'], graphs['boxes'], graphs['labels'],
                                          graphs['relations']):
            info = im_data[i]
            w, h = int(info['width']), int(info['height'])
            # SGB: box / BOX_SCALE * max(w, h) in float64, BoxList float32, clip_to_image
            xyxy = (boxes / self.box_scale * max(w, h)).astype(np.float32)
            np.clip(xyxy[:, 0::2], 0, w - 1, out=xyxy[:, 0::2])
            np.clip(xyxy[:, 1::2], 0, h - 1, out=xyxy[:, 1::2])
            if train:
                xyxy, labels, rels = self._drop_empty(xyxy, labels, rels)
            data_list.append(dict(
                img_path=osp.join(img_dir, f"{info['image_id']}.jpg"),
                img_id=int(info['image_id']), width=w, height=h, h5_index=int(i),
                instances=[dict(bbox=box.tolist(), bbox_label=int(lab) - 1, ignore_flag=0)
                           for box, lab in zip(xyxy, labels)],
                relations=rels))
        if self.check_images:
            self._check_images(data_list, img_dir)
        return data_list

    @staticmethod
    def _drop_empty(xyxy, labels, rels):
        """Drop boxes with no area after clipping and the relations that use them."""
        keep = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
        if keep.all():
            return xyxy, labels, rels
        new_idx = np.cumsum(keep) - 1
        rels = rels[keep[rels[:, 0]] & keep[rels[:, 1]]]
        rels = np.column_stack((new_idx[rels[:, 0]], new_idx[rels[:, 1]], rels[:, 2]))
        return xyxy[keep], labels[keep], rels.astype(np.int64)

    def _check_images(self, data_list: Sequence[dict], img_dir: str) -> None:
        missing = [d['img_path'] for d in data_list if not osp.isfile(d['img_path'])]
        if missing and self.split == 'train' and \
                len(missing) <= self.max_missing_ratio * len(data_list):
            print_log(
                f'VGSGGDataset (split {self.split!r}): {len(missing)} of {len(data_list)} images '
                f'are missing from {img_dir!r} (first: {", ".join(missing[:3])}); they are '
                'skipped and counted when drawn (default_hooks.bad_samples)', logger='current',
                level=logging.WARNING)
        elif missing:
            raise FileNotFoundError(
                f'VGSGGDataset (split {self.split!r}): {len(missing)} of {len(data_list)} '
                f'images are missing from {img_dir!r} (first missing: {missing[0]}). '
                f'{WHERE["img"]}; set data_root / data_prefix.img to that folder, or '
                'check_images=False to skip this check'
                + (f' (training tolerates max_missing_ratio={self.max_missing_ratio:g})'
                   if self.split == 'train' else '') + '.')

    def get_data_info(self, idx: int) -> dict:
        """mmengine's data_info, with SGB's random predicate per pair when training."""
        info = super().get_data_info(idx)
        if self.filter_duplicate_rels:
            info['relations'] = sample_one_predicate_per_pair(info['relations'])
        return info
