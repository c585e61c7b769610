"""SceneGraphDetector: mmdet's Faster R-CNN, frozen, with a relation head on top.

The detector part (backbone, neck, RPN, RoI head) is a plain mmdet ``TwoStageDetector``; its
weights come from ``detector_checkpoint`` (an mmdet Faster R-CNN checkpoint: one trained with
the tiny shapes detector config, or SGB's released VG detector converted by
``tools/model_converters/sgb_detector.py``) and never train: no gradient, always in eval mode.
``mode`` decides what comes from the ground truth (SGB's ``USE_GT_BOX`` /
``USE_GT_OBJECT_LABEL``):

- ``predcls``: ground-truth boxes and labels;
- ``sgcls``: ground-truth boxes, labels predicted (the frozen box head's logits feed the
  predictor's label refinement);
- ``sgdet``: detected boxes — RPN proposals (+ the ground-truth boxes while training, SGB's
  ``ADD_GTBOX_TO_PROPOSAL_IN_TRAIN``) through the box head, class-wise NMS (mmdet
  ``multiclass_nms``, ``test_cfg.rcnn``: score > 0.01, IoU 0.3), one class per box, at most
  ``max_per_img`` (80) boxes. While training, each detection carries the label of the
  ground-truth box its proposal was assigned to (``train_cfg.rcnn.assigner``; background below
  IoU 0.5).
"""
import os.path as osp
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.detectors import TwoStageDetector
from mmdet.models.layers import multiclass_nms
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi, get_box_tensor
from mmengine.logging import print_log
from mmengine.runner.checkpoint import CheckpointLoader
from mmengine.structures import InstanceData
from torch import Tensor

from .predictors.base import check_mode
from .relation_head_features import copy_shared_fcs

DETECTOR_PARTS = ('backbone', 'neck', 'rpn_head', 'roi_head')


@MODELS.register_module()
class SceneGraphDetector(TwoStageDetector):
    """Frozen Faster R-CNN + relation head.

    Args:
        backbone: mmdet backbone config.
        neck: mmdet neck config (FPN).
        rpn_head: mmdet RPN head config.
        roi_head: mmdet RoI head config (``StandardRoIHead`` + ``Shared2FCBBoxHead``).
        relation_head: :class:`~ovkit.sgg.relation_head.RelationHead` config.
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        detector_checkpoint: path of the detector weights, loaded when training starts;
            None leaves the detector randomly initialised (allowed for PredCls on synthetic
            data, where the box geometry carries the predicates; a warning says so).
        init_relation_mlps: initialise the relation head's box and union MLPs from the
            detector's bbox head ``shared_fcs`` (SGB's ``load_mapping``).
        add_gt_as_proposals: SGDet training, the ground-truth boxes join the RPN proposals.
        train_cfg: mmdet train config (``rpn``, ``rpn_proposal``, ``rcnn``).
        test_cfg: mmdet test config (``rpn``, ``rcnn``; ``rcnn`` holds SGDet's box NMS).
        data_preprocessor: mmdet data preprocessor config.
        init_cfg: mmengine init config.
    """

    def __init__(self, backbone: dict, neck: dict, rpn_head: dict, roi_head: dict,
                 relation_head: dict, mode: str = 'predcls',
                 detector_checkpoint: Optional[str] = None, init_relation_mlps: bool = True,
                 add_gt_as_proposals: bool = True, train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None, data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(backbone=backbone, neck=neck, rpn_head=rpn_head, roi_head=roi_head,
                         train_cfg=train_cfg, test_cfg=test_cfg,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.mode = check_mode(mode, 'model.mode')
        self.detector_checkpoint = detector_checkpoint
        self.init_relation_mlps = init_relation_mlps
        self.add_gt_as_proposals = add_gt_as_proposals
        relation_head = dict(relation_head, mode=self.mode)
        self.relation_head = MODELS.build(relation_head)
        if self.mode == 'sgdet':
            assigner = (train_cfg or {}).get('rcnn', {}).get('assigner', None) or dict(
                type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.3, min_pos_iou=0.5,
                match_low_quality=False, ignore_iof_thr=-1)
            self.sgdet_assigner = TASK_UTILS.build(assigner)
        for name in DETECTOR_PARTS:
            for param in getattr(self, name).parameters():
                param.requires_grad_(False)

    # -- freezing and loading -------------------------------------------------------------
    def train(self, mode: bool = True):
        """Train the relation head only; the detector stays in eval mode (frozen BN, dropout)."""
        super().train(mode)
        for name in DETECTOR_PARTS:
            getattr(self, name).eval()
        return self

    def init_weights(self) -> None:
        """Random init, then the detector checkpoint, then the relation MLPs from its box head."""
        super().init_weights()
        if self.detector_checkpoint is None:
            print_log('model.detector_checkpoint is None: the frozen detector keeps random '
                      'weights (fine for PredCls on synthetic data; set it for real use)',
                      logger='current', level=30)
        else:
            self.load_detector(self.detector_checkpoint)
        if self.init_relation_mlps:
            self._init_relation_mlps()

    def load_detector(self, path: str) -> None:
        """Load backbone/neck/rpn_head/roi_head weights from an mmdet detector checkpoint."""
        if '://' not in path and not osp.isfile(path):
            raise FileNotFoundError(
                f'detector checkpoint not found: {path} (config key `model.detector_checkpoint`). '
                'Train the matching detector config first (configs/sgg/ *_detector_* configs), '
                'or convert SGB\'s pretrained VG Faster R-CNN with '
                'tools/model_converters/sgb_detector.py, and point the key at the .pth file.')
        ckpt = CheckpointLoader.load_checkpoint(path, map_location='cpu')
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
        self.load_detector_state(state, path)
        print_log(f'loaded the frozen detector from {path}', logger='current')

    def load_detector_state(self, state: dict, source: str = 'the state dict') -> None:
        """Load a detector state dict into backbone, neck, rpn_head and roi_head, strictly.

        Every key of those four parts must be there with its shape, and nothing else under
        them: a checkpoint made for another detector (other depth, anchors per location, class
        count) would otherwise load partly and silently leave random weights.

        Args:
            state: mmdet Faster R-CNN state dict (``backbone.*``, ``neck.*``, ...).
            source: where it came from, for messages (the checkpoint path).
        """
        problems = []
        parts = {}
        for name in DETECTOR_PARTS:
            prefix = name + '.'
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            own = getattr(self, name).state_dict()
            missing = [name + '.' + k for k in own if k not in part]
            unexpected = [name + '.' + k for k in part if k not in own]
            shapes = [f'{name}.{k} {tuple(v.shape)} (model: {tuple(own[k].shape)})'
                      for k, v in part.items() if k in own and v.shape != own[k].shape]
            for what, keys in (('missing', missing), ('unexpected', unexpected),
                               ('with another shape', shapes)):
                if keys:
                    problems.append(f'{len(keys)} keys {what}, e.g. {", ".join(keys[:3])}')
            parts[name] = part
        if problems:
            raise ValueError(
                f'{source} (model.detector_checkpoint) does not fit the detector of this config: '
                + '; '.join(problems) + '. Use the checkpoint of the matching detector config '
                '(or tools/model_converters/sgb_detector.py for SGB\'s VG150 detector with the '
                'VG150 configs).')
        for name, part in parts.items():
            getattr(self, name).load_state_dict(part, strict=True)

    def _init_relation_mlps(self) -> None:
        shared = getattr(self.roi_head.bbox_head, 'shared_fcs', None)
        if shared is None or len(shared) == 0:
            return
        for name in ('box_feature_extractor', 'union_feature_extractor'):
            extractor = getattr(self.relation_head, name, None)
            if extractor is not None:
                copy_shared_fcs(extractor.fcs, shared)

    # -- proposals for the relation head --------------------------------------------------
    def _gt_proposals(self, x: Tuple[Tensor], data_samples: SampleList) -> List[InstanceData]:
        props = []
        for s in data_samples:
            p = InstanceData(metainfo=dict(img_shape=s.metainfo['img_shape']))
            p.bboxes = get_box_tensor(s.gt_instances.bboxes).float()
            p.labels = s.gt_instances.labels.long() + 1
            props.append(p)
        if self.mode == 'sgcls':
            rois = bbox2roi([p.bboxes for p in props])
            cls_score = self.roi_head._bbox_forward(x, rois)['cls_score']
            for p, logits in zip(props, cls_score.split([len(p) for p in props])):
                p.predict_logits = self._sgb_order(logits)
        return props

    @staticmethod
    def _sgb_order(cls_score: Tensor) -> Tensor:
        """mmdet puts background last, SGB first."""
        return torch.cat([cls_score[:, -1:], cls_score[:, :-1]], dim=1)

    def _detected_proposals(self, x: Tuple[Tensor], data_samples: SampleList,
                            training: bool) -> List[InstanceData]:
        metas = [s.metainfo for s in data_samples]
        rpn_cfg = self.train_cfg.get('rpn_proposal', self.test_cfg.rpn) if (
            training and self.train_cfg) else self.test_cfg.rpn
        rpn_outs = self.rpn_head(x)
        rpn_results = self.rpn_head.predict_by_feat(*rpn_outs, batch_img_metas=metas,
                                                    cfg=rpn_cfg, rescale=False)
        boxes = []
        for s, res in zip(data_samples, rpn_results):
            b = res.bboxes
            if training and self.add_gt_as_proposals:
                b = torch.cat([b, get_box_tensor(s.gt_instances.bboxes).to(b)], dim=0)
            boxes.append(b)
        rois = bbox2roi(boxes)
        out = self.roi_head._bbox_forward(x, rois)
        sizes = [len(b) for b in boxes]
        props = []
        for i, (s, b, score, delta) in enumerate(zip(data_samples, boxes,
                                                    out['cls_score'].split(sizes),
                                                    out['bbox_pred'].split(sizes))):
            labels = None
            if training:
                labels = self._assign_labels(b, s.gt_instances)
            props.append(self._detections(b, score, delta, s.metainfo, labels))
        return props

    def _assign_labels(self, boxes: Tensor, gt_instances: InstanceData) -> Tensor:
        """Ground-truth label (SGB layout) of each proposal; 0 when not a positive match."""
        gt = InstanceData(bboxes=get_box_tensor(gt_instances.bboxes), labels=gt_instances.labels)
        assign = self.sgdet_assigner.assign(InstanceData(priors=boxes), gt)
        labels = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
        pos = assign.gt_inds > 0
        labels[pos] = gt_instances.labels[assign.gt_inds[pos] - 1].long() + 1
        return labels

    def _detections(self, boxes: Tensor, cls_score: Tensor, bbox_pred: Tensor, meta: dict,
                    labels: Optional[Tensor]) -> InstanceData:
        """SGB's relation-mode box post-processing for one image.

        Per-class boxes from mmdet's bbox coder, mmdet ``multiclass_nms`` with ``test_cfg.rcnn``
        (score_thr, nms) and no cap, then one class per box (the best class that survived its
        NMS, SGB ``NMS_FILTER_DUPLICATES``) and the ``max_per_img`` best boxes.
        """
        cfg = self.test_cfg.rcnn
        bbox_head = self.roi_head.bbox_head
        num_classes = bbox_head.num_classes
        scores = F.softmax(cls_score, dim=-1)
        n = boxes.shape[0]
        if bbox_pred.shape[1] == 4:  # class-agnostic regression
            per_cls = bbox_head.bbox_coder.decode(boxes, bbox_pred, max_shape=meta['img_shape'])
            per_cls = per_cls[:, None].expand(n, num_classes, 4)
        else:
            per_cls = bbox_head.bbox_coder.decode(
                boxes.repeat_interleave(num_classes, dim=0), bbox_pred.view(-1, 4),
                max_shape=meta['img_shape']).view(n, num_classes, 4)
        per_cls = get_box_tensor(per_cls)
        dets, det_labels, inds = multiclass_nms(
            per_cls.reshape(n, -1), scores, cfg.score_thr, cfg.nms, max_num=-1,
            return_inds=True)
        box_idx = inds // num_classes
        order = torch.argsort(dets[:, -1], descending=True, stable=True)
        box_idx, det_labels, det_scores = box_idx[order], det_labels[order], dets[order, -1]
        # first (= best) surviving class of every box
        k = box_idx.numel()
        first_pos = torch.full((n,), k, dtype=torch.long, device=boxes.device).scatter_reduce(
            0, box_idx, torch.arange(k, device=boxes.device), reduce='amin')
        first = first_pos[first_pos < k].sort()[0]
        box_idx, det_labels, det_scores = box_idx[first], det_labels[first], det_scores[first]
        max_per_img = cfg.get('max_per_img', 80)
        if max_per_img > 0:
            box_idx, det_labels, det_scores = (box_idx[:max_per_img], det_labels[:max_per_img],
                                               det_scores[:max_per_img])
        # SGB layout: column 0 = background (its box is the proposal itself)
        boxes_per_cls = torch.cat([boxes[:, None], per_cls], dim=1)[box_idx]
        p = InstanceData(metainfo=dict(img_shape=meta['img_shape']))
        p.bboxes = boxes_per_cls[torch.arange(len(box_idx), device=boxes.device), det_labels + 1]
        p.boxes_per_cls = boxes_per_cls
        p.predict_logits = self._sgb_order(cls_score[box_idx])
        p.det_scores = det_scores
        if labels is not None:
            p.labels = labels[box_idx]
        return p

    def object_proposals(self, x: Tuple[Tensor], data_samples: SampleList,
                         training: bool) -> List[InstanceData]:
        """The boxes the relation head works on, per the ``mode``."""
        if self.mode == 'sgdet':
            return self._detected_proposals(x, data_samples, training)
        return self._gt_proposals(x, data_samples)

    # -- mmdet entry points ---------------------------------------------------------------
    @property
    def needs_image_features(self) -> bool:
        """False only for a PredCls predictor that reads no feature (the frequency baseline):
        then the frozen detector need not run at all."""
        head = self.relation_head
        return (self.mode != 'predcls' or hasattr(head, 'box_feature_extractor')
                or hasattr(head, 'union_feature_extractor'))

    def _features(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        if self.needs_image_features:
            return self.extract_feat(batch_inputs)
        return (batch_inputs.new_zeros((batch_inputs.shape[0], 0)),)

    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> dict:
        self._check_relations(batch_data_samples)
        with torch.no_grad():
            x = self._features(batch_inputs)
            proposals = self.object_proposals(x, batch_data_samples, training=True)
        gt_instances = [s.gt_instances for s in batch_data_samples]
        for g in gt_instances:
            g.bboxes = get_box_tensor(g.bboxes)
        return self.relation_head.loss(
            x, proposals, [s.gt_relations for s in batch_data_samples], gt_instances)

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Scene graphs: ``pred_instances`` and ``pred_relations`` of every data sample."""
        x = self._features(batch_inputs)
        proposals = self.object_proposals(x, batch_data_samples, training=False)
        results = self.relation_head.predict(
            x, proposals, [s.metainfo for s in batch_data_samples], rescale=rescale)
        for sample, (inst, rels) in zip(batch_data_samples, results):
            sample.pred_instances = inst
            sample.pred_relations = rels
        return batch_data_samples

    def _forward(self, batch_inputs: Tensor, batch_data_samples: SampleList):
        """Raw predictor outputs (object logits, predicate logits per image), for analysis."""
        x = self._features(batch_inputs)
        proposals = self.object_proposals(x, batch_data_samples, training=False)
        pairs = [self.relation_head.sampler.test_pairs(p.bboxes, self.mode != 'sgdet')
                 for p in proposals]
        obj_logits, rel_logits, _ = self.relation_head._run(x, proposals, pairs)
        return obj_logits, rel_logits

    @staticmethod
    def _check_relations(samples: SampleList) -> None:
        for s in samples:
            if 'gt_relations' not in s:
                raise KeyError(
                    f'{s.metainfo.get("img_path", "a sample")} has no `gt_relations`: the train '
                    'pipeline must end with LoadSGGAnnotations ... PackSGGInputs '
                    '(ovkit.sgg transforms)')
