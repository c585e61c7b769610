"""Open-vocabulary COCO evaluation: box AP50 over the novel, the base and all classes.

OV-COCO results (OVR-CNN, ViLD, Detic, BARON) are reported as AP50 averaged over the 17 novel
and the 48 base classes separately; mmdet's ``CocoMetric`` reports only the average over all
classes. For OV-LVIS nothing is added: mmdet's ``LVISMetric`` already reports ``bbox_APr``
(rare = novel), ``bbox_APc`` and ``bbox_APf``.
"""
import contextlib
import io
import os.path as osp
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmdet.datasets.api_wrappers import COCO, COCOeval
from mmdet.evaluation.metrics import CocoMetric
from mmdet.registry import METRICS
from mmengine.fileio import load
from mmengine.logging import MMLogger
from terminaltables import AsciiTable

_SPLITS = ('novel', 'base')


@METRICS.register_module()
class OVCocoAP50Metric(CocoMetric):
    """mmdet's ``CocoMetric`` plus ``novel_ap50``, ``base_ap50`` and ``all_ap50``.

    All of ``CocoMetric``'s results are kept (``coco/bbox_mAP`` ...); the three added ones are
    box AP at IoU 0.5 with at most 100 detections per image (the OV-COCO protocol of OVR-CNN
    and BARON; mmdet's ``bbox_mAP_50`` keeps ``proposal_nums[2]`` = 1000), averaged over the
    categories of each split that have ground truth in the evaluated images. A category
    without ground truth has no AP and is left out of the means; an empty mean is NaN.

    mmdet 3.3 has an ``OVCocoMetric`` too, but it reads the split only from the dataset's
    metainfo keys ``base_classes``/``novel_classes``, silently skips names that are not in the
    annotation file, takes AP50 at the last ``proposal_nums`` entry (1000 by default) and
    reports -1 for an empty split. It re-implements all of ``CocoMetric.compute_metrics`` to
    reach the COCOeval object; here the per-category AP50 comes instead from a second COCOeval
    run restricted to IoU 0.5, one area range and 100 detections, a fraction of the first.

    Args:
        novel_classes (list[str], optional): names of the novel classes, each one of the
            dataset's ``classes``; the others are base. When None, every evaluated category of
            ``ann_file`` must carry ``split: 'novel' | 'base'`` (as written by
            ``tools/data/make_ov_splits.py`` and ``ovkit.shapes``).
        **kwargs: passed to ``CocoMetric``; ``metric`` must include ``'bbox'``.
    """

    def __init__(self, novel_classes: Optional[Sequence[str]] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if 'bbox' not in self.metrics:
            raise ValueError(f"OVCocoAP50Metric: metric={self.metrics} has no 'bbox'; the "
                             "novel/base AP50 is a box metric, add 'bbox' or use CocoMetric.")
        if novel_classes is not None:
            if isinstance(novel_classes, str) or not all(
                    isinstance(n, str) for n in novel_classes):
                raise TypeError(f'OVCocoAP50Metric: novel_classes must be a list of class names, '
                                f'got {novel_classes!r}.')
            novel_classes = list(novel_classes)
        elif self._coco_api is None:
            raise ValueError(
                'OVCocoAP50Metric: novel_classes=None needs ann_file= with categories that carry '
                "'split' (base/novel); set ann_file (e.g. a *_ov_all.json from "
                'tools/data/make_ov_splits.py) or novel_classes=[...].')
        self.novel_classes = novel_classes

    @property
    def dataset_meta(self) -> Optional[dict]:
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict) -> None:
        """Check the novel names as soon as the evaluator knows the dataset, not after a
        whole evaluation loop."""
        self._dataset_meta = dataset_meta
        if dataset_meta is not None and 'classes' in dataset_meta:
            self._check_novel_names(dataset_meta['classes'])

    def _check_novel_names(self, classes: Sequence[str]) -> None:
        if self.novel_classes is not None:
            unknown = [n for n in self.novel_classes if n not in classes]
            if unknown:
                raise ValueError(
                    f'OVCocoAP50Metric: novel_classes {unknown} are not among the dataset classes '
                    f'{list(classes)}; fix novel_classes in the evaluator config (names must '
                    "match the dataset's metainfo 'classes' exactly).")
            return
        if self._coco_api is None:  # ground truth comes later, from the data samples
            return
        bad = {c['name']: c.get('split') for c in self._coco_api.dataset['categories']
               if c['name'] in classes and c.get('split') not in _SPLITS}
        if bad:
            raise ValueError(
                "OVCocoAP50Metric: novel_classes=None, so the categories of ann_file must carry "
                f"'split': 'novel'|'base', but {dict(list(bad.items())[:5])} ({len(bad)} "
                'categories) do not. Write the file with tools/data/make_ov_splits.py or set '
                'novel_classes=[...] in the evaluator config.')

    def _split_of(self) -> Dict[int, str]:
        """'novel' or 'base' for each evaluated category id."""
        self._check_novel_names(self.dataset_meta['classes'])
        cats = self._coco_api.cats
        if self.novel_classes is not None:
            novel = set(self.novel_classes)
            return {c: 'novel' if cats[c]['name'] in novel else 'base' for c in self.cat_ids}
        return {c: cats[c]['split'] for c in self.cat_ids}

    def _ap50_per_category(self, preds: Sequence[dict]) -> Dict[int, Optional[float]]:
        """AP at IoU 0.5 (COCO 101-point interpolation, 100 dets, all areas) per category id;
        None where the category has no ground truth."""
        with tempfile.TemporaryDirectory() as tmp:
            result_files = self.results2json(preds, osp.join(tmp, 'ov'))
            dets = load(result_files['bbox'])
        gt = self._coco_api
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            if dets:
                coco_dt = gt.loadRes(dets)
            else:  # loadRes rejects an empty list; no detection means AP 0 where GT exists
                coco_dt = COCO()
                coco_dt.dataset = dict(images=list(gt.dataset['images']),
                                       categories=list(gt.dataset['categories']), annotations=[])
                coco_dt.createIndex()
            coco_eval = COCOeval(gt, coco_dt, 'bbox')
            params = coco_eval.params
            params.catIds, params.imgIds = list(self.cat_ids), list(self.img_ids)
            params.iouThrs = np.array([0.5])
            params.maxDets = [100]
            params.areaRng, params.areaRngLbl = [[0, 1e10]], ['all']
            coco_eval.evaluate()
            coco_eval.accumulate()
        precision = coco_eval.eval['precision']  # [iou, recall, category, area, maxDets]
        out = {}
        for k, cat_id in enumerate(params.catIds):
            p = precision[0, :, k, 0, 0]
            p = p[p > -1]
            out[cat_id] = float(np.mean(p)) if p.size else None
        return out

    def compute_metrics(self, results: list) -> Dict[str, float]:
        eval_results = super().compute_metrics(results)
        if self.format_only:
            return eval_results
        split_of = self._split_of()
        ap50 = self._ap50_per_category([pred for _, pred in results])
        rows = [['split', 'classes', 'with GT', 'AP50']]
        for split in _SPLITS + ('all',):
            ids = [c for c in self.cat_ids if split in ('all', split_of[c])]
            aps = [ap50[c] for c in ids if ap50[c] is not None]
            value = float(np.mean(aps)) if aps else float('nan')
            eval_results[f'{split}_ap50'] = value
            rows.append([split, len(ids), len(aps), f'{value:.4f}'])
        MMLogger.get_current_instance().info('open-vocabulary box AP50:\n'
                                             + AsciiTable(rows).table)
        return eval_results


__all__: List[str] = ['OVCocoAP50Metric']
