"""``SGGMetric``: SGB-exact scene-graph recall metrics as an mmengine metric.

SGB evaluates at batch size 1 on one GPU after gathering every prediction; here each process
reduces its images to a few counts with :func:`ovkit.sgg.evaluation.evaluate_image` (any batch
size), mmengine's ``BaseMetric`` gathers the counts across ranks and rank 0 combines them in
dataset order, so the numbers do not depend on the batch size or the number of processes.
"""
import json
import numbers
import os
import os.path as osp
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmdet.registry import METRICS
from mmengine.evaluator import BaseMetric
from mmengine.logging import MessageHub, MMLogger, print_log
from mmengine.structures import BaseDataElement

from .evaluation import MODES, TOPKS, TripletSet, check_topks, evaluate_image, summarize

ZEROSHOT_WHERE = ('SGB ships it as maskrcnn_benchmark/data/datasets/evaluation/vg/'
                  'zeroshot_triplet.pytorch in Scene-Graph-Benchmark.pytorch; the shapes data '
                  'writes zeroshot_triplet.npy next to its h5')


def load_triplets(path: str) -> np.ndarray:
    """[Z, 3] int64 (subject class, object class, predicate) from .pytorch/.pth/.npy/.txt.

    Args:
        path: SGB's ``zeroshot_triplet.pytorch`` (a torch LongTensor), a ``.npy`` array or a
            text file with three integers per line.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'SGGMetric: zeroshot_triplets={path!r} does not exist; '
                                f'{ZEROSHOT_WHERE}. Set zeroshot_triplets=None to skip zR@K.')
    if path.endswith(('.pytorch', '.pth', '.pt')):
        arr = torch.load(path, map_location='cpu')
        arr = arr.numpy() if torch.is_tensor(arr) else np.asarray(arr)
    elif path.endswith('.npy'):
        arr = np.load(path)
    else:
        arr = np.loadtxt(path, dtype=np.int64, ndmin=2, delimiter=',' if path.endswith(
            '.csv') else None)
    arr = np.asarray(arr, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f'SGGMetric: zeroshot_triplets {path} must hold [Z, 3] rows, got '
                         f'shape {arr.shape}')
    return arr


def _np(x, dtype=None):
    if hasattr(x, 'tensor'):                       # mmdet BaseBoxes
        x = x.tensor
    if torch.is_tensor(x):
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()                          # fp16 / bf16 model outputs
        x = x.detach().cpu().numpy()
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def _float32(x):
    """float32 like SGB's tensors, without turning a malformed input into silent numbers."""
    arr = _np(x)
    return arr.astype(np.float32) if arr.dtype.kind in 'fiub' else arr


@METRICS.register_module()
class SGGMetric(BaseMetric):
    """R@K, ngR@K, mR@K, ng-mR@K, zR@K, ng-zR@K and A@K exactly as SGB computes them.

    Reads, per data sample: ``gt_instances`` (boxes, labels 0..C-1), ``gt_relations``
    (pairs, labels 1..P), the original-pixel GT boxes ``ori_gt_bboxes`` from the metainfo
    (written by ``LoadSGGAnnotations`` + ``PackSGGInputs``; otherwise ``gt_instances.bboxes``
    divided by ``scale_factor``), ``pred_instances`` (bboxes in original pixels, labels,
    scores) and ``pred_relations`` (pairs, scores [M, P+1] incl. background, rows ranked).
    As SGB, boxes are compared in the frame of ``image_data.json``: where its size
    (metainfo ``ann_shape``) differs from the loaded image's (``ori_shape``), the predicted
    boxes are scaled by json size / image size. Malformed predictions (shapes, indices out of
    range, NaN/inf) raise a ``ValueError`` naming the sample's img_id and img_path.
    Results are fractions, keyed ``sgg/R@50`` etc. At the end a per-predicate recall table is
    logged, and a bar chart (PNG) and a JSON of all numbers are written to ``out_dir`` (by
    default the run's log folder, ``work_dir/<timestamp>/``).

    Args:
        mode: 'predcls', 'sgcls' or 'sgdet' (the relation model's mode).
        iou_thr: IoU threshold for subject and object boxes (SGB: 0.5).
        topks: the K values, each in 1..100 (SGB: 20, 50, 100; it cuts the ng list at 100).
        zeroshot_triplets: path of the zero-shot triplet file (see :func:`load_triplets`) or
            None (no zR@K).
        num_predicates: P; by default from the dataset's ``predicates`` metainfo (minus
            background) or the predicted score columns.
        out_dir: folder for the chart and JSON; None: the log folder of the running Runner.
        plot: write the per-predicate recall bar chart.
        collect_device: 'cpu' or 'gpu', as mmengine's ``BaseMetric``.
        prefix: key prefix (default 'sgg').
    """

    default_prefix = 'sgg'

    def __init__(self,
                 mode: str = 'predcls',
                 iou_thr: float = 0.5,
                 topks: Sequence[int] = TOPKS,
                 zeroshot_triplets: Optional[Union[str, np.ndarray]] = None,
                 num_predicates: Optional[int] = None,
                 out_dir: Optional[str] = None,
                 plot: bool = True,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if mode not in MODES:
            raise ValueError(f'SGGMetric: mode must be one of {MODES}, got {mode!r} (set it to '
                             'the model\'s mode)')
        self.mode = mode
        if not isinstance(iou_thr, numbers.Real) or not 0 < iou_thr <= 1:
            raise ValueError(f'SGGMetric: iou_thr must be a number in (0, 1] (SGB: 0.5), got '
                             f'{iou_thr!r}')
        self.iou_thr = float(iou_thr)
        self.topks = check_topks(topks, 'SGGMetric')
        if num_predicates is not None and (not isinstance(num_predicates, int)
                                           or num_predicates < 1):
            raise ValueError(f'SGGMetric: num_predicates must be a positive int (VG150: 50) or '
                             f'None (from the dataset), got {num_predicates!r}')
        self.zeroshot_path = zeroshot_triplets if isinstance(zeroshot_triplets, str) else None
        if zeroshot_triplets is None:
            self.zeroshot = None
        else:
            rows = (load_triplets(zeroshot_triplets) if isinstance(zeroshot_triplets, str)
                    else zeroshot_triplets)
            self.zeroshot = TripletSet(rows)
        self.num_predicates = num_predicates
        self.out_dir = out_dir
        self.plot = plot
        self._num_evals = 0

    # ------------------------------------------------------------------ per batch
    @staticmethod
    def _name(ds: dict) -> str:
        return f"img_id={ds.get('img_id')}, img_path={ds.get('img_path')}"

    def _image(self, ds: dict) -> dict:
        """One data sample (as a dict) -> SGB's per-image fields (numpy, classes 1-based).

        Boxes end up in the frame of ``image_data.json`` (``ann_shape``), as in SGB, which
        resizes its predictions to the json's width and height before evaluating
        (``vg_eval.py``): predictions arrive in the loaded image's pixels (mmdet's rescale)
        and are scaled by json size / loaded size where the two differ.
        """
        gt, rels = ds['gt_instances'], ds.get('gt_relations')
        if rels is None:
            raise KeyError(f'SGGMetric ({self._name(ds)}): data sample has no gt_relations; '
                           'the test pipeline needs LoadSGGAnnotations and PackSGGInputs')
        if 'pred_instances' not in ds or 'pred_relations' not in ds:
            raise KeyError(f'SGGMetric ({self._name(ds)}): data sample has no pred_instances '
                           '/ pred_relations; the model must return scene-graph predictions')
        ann, ori = ds.get('ann_shape'), ds.get('ori_shape')
        to_ann = None
        if ann is not None and ori is not None and tuple(ann[:2]) != tuple(ori[:2]):
            sx, sy = ann[1] / ori[1], ann[0] / ori[0]
            to_ann = np.array([sx, sy, sx, sy], dtype=np.float32)
        if 'ori_gt_bboxes' in ds:
            gt_boxes = _float32(ds['ori_gt_bboxes'])      # already in the json's frame
        else:
            gt_boxes = _float32(gt['bboxes'])
            scale = np.asarray(ds.get('scale_factor', (1.0, 1.0)), dtype=np.float32)
            gt_boxes = gt_boxes / np.tile(scale[:2], 2)
            if to_ann is not None:
                gt_boxes = gt_boxes * to_ann
        pred, prel = ds['pred_instances'], ds['pred_relations']
        pred_boxes = _float32(pred['bboxes'])
        if to_ann is not None and pred_boxes.ndim == 2 and pred_boxes.shape[-1] == 4:
            pred_boxes = pred_boxes * to_ann
        return dict(
            gt_boxes=gt_boxes,
            gt_classes=_np(gt['labels']) + 1,
            gt_rels=np.column_stack((_np(rels['pairs']).reshape(-1, 2),
                                     _np(rels['labels']).reshape(-1))),
            pred_boxes=pred_boxes,
            pred_classes=_np(pred['labels']) + 1,
            obj_scores=_float32(pred['scores']),
            pred_rel_inds=_np(prel['pairs']),
            rel_scores=_float32(prel['scores']))

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        """Reduce each image of the batch to its counts (kept until ``compute_metrics``)."""
        for ds in data_samples:
            if isinstance(ds, BaseDataElement):
                ds = ds.to_dict()
            image = self._image(ds)
            rel_scores = image['rel_scores']
            width = rel_scores.shape[1] if rel_scores.ndim == 2 and rel_scores.size else None
            names = (self.dataset_meta or {}).get('predicates')
            expect = (self.num_predicates + 1 if self.num_predicates is not None
                      else len(names) if names else None)
            if width is not None and expect is not None and width != expect:
                raise ValueError(
                    f'SGGMetric ({self._name(ds)}): pred_relations.scores has {width} columns, '
                    f'expected P + 1 = {expect} (background + the dataset\'s predicates); '
                    'check the relation head\'s num_predicates')
            rec = evaluate_image(image, self.mode, self.iou_thr, self.topks, self.zeroshot,
                                 name=self._name(ds))
            order = ds.get('sample_idx', ds.get('img_id'))
            self.results.append((order, width, rec))

    # ------------------------------------------------------------------ end of evaluation
    def _predicate_names(self, num_predicates: int) -> List[str]:
        names = (self.dataset_meta or {}).get('predicates')
        if names is not None and len(names) == num_predicates + 1:
            return [str(n) for n in names[1:]]
        return [f'predicate_{i}' for i in range(1, num_predicates + 1)]

    def _resolve_num_predicates(self, results) -> int:
        if self.num_predicates is not None:
            return int(self.num_predicates)
        names = (self.dataset_meta or {}).get('predicates')
        if names:
            return len(names) - 1
        widths = [w for _, w, _ in results if w]
        if not widths:
            raise ValueError('SGGMetric: cannot tell the number of predicates (no dataset '
                             'metainfo, no predicted pairs); set num_predicates')
        return widths[0] - 1

    def compute_metrics(self, results: list) -> dict:
        """Combine the gathered per-image counts (in dataset order) into the metrics."""
        logger = MMLogger.get_current_instance()
        results = sorted(results, key=lambda r: (r[0] is None, r[0]))
        num_predicates = self._resolve_num_predicates(results)
        res = summarize([r for _, _, r in results], num_predicates, self.topks,
                        with_zeroshot=self.zeroshot is not None,
                        with_accuracy=self.mode != 'sgdet')
        names = self._predicate_names(num_predicates)
        skipped = len(results) - res['num_images']
        logger.info(f'SGG evaluation ({self.mode}): {res["num_images"]} images evaluated, '
                    f'{skipped} skipped (no GT relation or no predicted pair), '
                    f'{len(names)} predicates')
        if res['num_images'] == 0:
            print_log('SGGMetric: no image was evaluated; every metric is NaN', logger,
                      level=30)
        logger.info('\n' + self.summary_table(res) + '\n' + self.predicate_table(res, names))
        self._save(res, names)
        self._num_evals += 1
        return {k: v for k, v in res.items()
                if '@' in k and not isinstance(v, (dict, np.ndarray))}

    def summary_table(self, res: dict) -> str:
        """Metric x K table of the results."""
        from terminaltables import AsciiTable
        rows = [['metric'] + [f'@{k}' for k in self.topks]]
        for name in ('R', 'ngR', 'mR', 'ng-mR', 'zR', 'ng-zR', 'A'):
            if f'{name}@{self.topks[0]}' in res:
                rows.append([name] + [f'{100 * res[f"{name}@{k}"]:.2f}' for k in self.topks])
        return AsciiTable(rows, title=f' {self.mode} (%) ').table

    def predicate_table(self, res: dict, names: Sequence[str]) -> str:
        """Per-predicate recall table, predicates by GT frequency (most frequent first)."""
        from terminaltables import AsciiTable
        counts = res['gt_count']
        order = np.argsort(-counts, kind='stable')
        k = self.topks
        rows = [['predicate', '#GT'] + [f'R@{x}' for x in k] + [f'ngR@{k[-1]}']]
        for i in order:
            rows.append([names[i], str(int(counts[i]))] +
                        [f'{100 * res["per_predicate"][f"mR@{x}"][i]:.2f}' for x in k] +
                        [f'{100 * res["per_predicate"][f"ng-mR@{k[-1]}"][i]:.2f}'])
        return AsciiTable(rows, title=' per-predicate recall (%) ').table

    def _target_dir(self) -> Optional[str]:
        if self.out_dir is not None:
            return self.out_dir
        log_file = getattr(MMLogger.get_current_instance(), 'log_file', None)
        return osp.dirname(log_file) if log_file else None

    def _save(self, res: dict, names: Sequence[str]) -> None:
        out_dir = self._target_dir()
        if out_dir is None:
            return
        os.makedirs(out_dir, exist_ok=True)
        it = MessageHub.get_current_instance().get_info('iter')
        tag = f'{self.mode}_iter{it}' if it is not None else f'{self.mode}_{self._num_evals}'
        data = {k: v for k, v in res.items() if '@' in k}
        data.update(mode=self.mode, num_images=res['num_images'],
                    zeroshot_triplets=self.zeroshot_path,
                    per_predicate={name: {m: float(v[i]) for m, v in res['per_predicate'].items()}
                                   | {'gt_count': int(res['gt_count'][i])}
                                   for i, name in enumerate(names)})
        with open(osp.join(out_dir, f'sgg_{tag}.json'), 'w') as f:
            json.dump(data, f, indent=1)
        if self.plot:
            path = osp.join(out_dir, f'sgg_per_predicate_recall_{tag}.png')
            plot_predicate_recall(res, names, self.topks[-1], path, title=self.mode)
            MMLogger.get_current_instance().info(f'per-predicate recall chart: {path}')


def plot_predicate_recall(res: dict, names: Sequence[str], k: int, path: str,
                          title: str = '') -> str:
    """Bar chart of per-predicate R@k and ngR@k, predicates by GT frequency.

    Args:
        res: output of :func:`ovkit.sgg.evaluation.summarize`.
        names: the P predicate names (no background).
        k: which K to draw.
        path: PNG to write.
        title: chart title prefix.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    counts = res['gt_count']
    order = np.argsort(-counts, kind='stable')
    r = res['per_predicate'][f'mR@{k}'][order]
    ng = res['per_predicate'][f'ng-mR@{k}'][order]
    x = np.arange(len(order))
    fig = Figure(figsize=(max(6, 0.28 * len(order) + 2), 4.5))
    FigureCanvasAgg(fig)        # no pyplot: no global backend state, safe in workers
    ax = fig.add_subplot()
    ax.bar(x - 0.2, r, 0.4, label=f'R@{k} (mR@{k}={res[f"mR@{k}"]:.3f})')
    ax.bar(x + 0.2, ng, 0.4, label=f'ngR@{k} (ng-mR@{k}={res[f"ng-mR@{k}"]:.3f})')
    ax.set_xticks(x)
    ax.set_xticklabels([f'{names[i]} ({int(counts[i])})' for i in order], rotation=90,
                       fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel('recall')
    ax.set_title(f'{title} per-predicate recall, predicates by #GT (in brackets)')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
