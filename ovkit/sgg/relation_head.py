"""The relation head: pairs, features, predictor, losses and SGB's post-processing.

Follows SGB's ``ROIRelationHead`` (``relation_head.py``, ``loss.py``, ``inference.py``): at train
time it samples pairs (:class:`~ovkit.sgg.sampling.RelationPairSampler`), extracts box and
union-box features, runs the predictor and returns ``loss_rel`` (cross-entropy over predicates,
background included) and, outside PredCls, ``loss_refine_obj`` (cross-entropy of the refined
object logits); at test time it scores every ordered pair and ranks the triplets by
max-foreground-predicate probability x subject score x object score.

Object labels inside the head use SGB's layout (0 background, 1..C); the detector converts from
and to mmdet's 0..C-1 at the boundary.
"""
import copy
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmdet.registry import HOOKS, MODELS, TASK_UTILS
from mmdet.structures.bbox import scale_boxes
from mmengine.hooks import Hook
from mmengine.model import BaseModule, is_model_wrapper
from mmengine.runner import BaseLoop
from mmengine.structures import InstanceData
from torch import Tensor

from .predictors.base import check_mode, nms_class_assignment

_DEFAULT_BOX_EXTRACTOR = dict(
    type='RelationBoxFeatureExtractor',
    roi_extractor=dict(
        type='SingleRoIExtractor',
        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2, aligned=False),
        out_channels=256, featmap_strides=[4, 8, 16, 32]),
    in_channels=256, roi_feat_size=7, mlp_dims=(4096, 4096))
_DEFAULT_UNION_EXTRACTOR = dict(
    type='RelationUnionFeatureExtractor',
    roi_extractor=dict(
        type='AllLevelsRoIExtractor',
        roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=2, aligned=False),
        out_channels=256, featmap_strides=[4, 8, 16, 32]),
    in_channels=256, roi_feat_size=7, mlp_dims=(4096, 4096))


@MODELS.register_module()
class RelationHead(BaseModule):
    """Scene-graph relation head on a frozen two-stage detector.

    Args:
        predictor: predictor config (``MotifsPredictor``, ``IMPPredictor``,
            ``FrequencyPredictor`` or any :class:`BaseRelationPredictor`); ``mode``,
            ``num_classes``, ``num_predicates`` and the feature sizes are filled in.
        num_classes: C, object classes without background (VG150: 150).
        num_predicates: P, predicates without background (VG150: 50).
        mode: 'predcls' | 'sgcls' | 'sgdet'; the SceneGraphDetector sets it from its own.
        box_feature_extractor: config of the per-box feature extractor.
        union_feature_extractor: config of the union-box feature extractor.
        sampler: config of the pair sampler (SGB: 1024 pairs, 25% foreground).
        loss_rel: predicate loss config (mmdet loss).
        loss_obj: object refinement loss config (mmdet loss).
        statistics: where the frequency statistics come from, read when the model is
            initialised for training: ``dict(dataset=<train dataset config>, cache_dir=...)``
            for :func:`ovkit.sgg.statistics.get_statistics`, or an already computed dict with
            ``pred_dist`` [C+1, C+1, P+1] and ``obj_classes``. Under an mmengine Runner,
            :class:`SGGStatisticsHook` fills in the training dataset and the work dir (cache).
        init_cfg: mmengine init config.
    """

    def __init__(self, predictor: dict, num_classes: int, num_predicates: int,
                 mode: str = 'predcls',
                 box_feature_extractor: dict = _DEFAULT_BOX_EXTRACTOR,
                 union_feature_extractor: dict = _DEFAULT_UNION_EXTRACTOR,
                 sampler: dict = dict(type='RelationPairSampler'),
                 loss_rel: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 loss_obj: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),
                 statistics: Optional[dict] = None, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.mode = check_mode(mode, 'model.mode')
        self.num_classes = num_classes
        self.num_predicates = num_predicates
        self.statistics_cfg = statistics
        self.sampler = TASK_UTILS.build(sampler)
        predictor = copy.deepcopy(predictor)
        predictor_cls = MODELS.get(predictor['type']) if isinstance(predictor['type'], str) \
            else predictor['type']
        if predictor_cls is None:
            raise KeyError(f'unknown relation predictor type {predictor["type"]!r} '
                           '(model.relation_head.predictor.type); did you import ovkit.sgg?')
        in_channels = union_channels = 0
        if predictor_cls.needs_roi_features:
            self.box_feature_extractor = MODELS.build(box_feature_extractor)
            in_channels = self.box_feature_extractor.out_channels
        predictor.update(mode=self.mode, num_classes=num_classes, num_predicates=num_predicates,
                         in_channels=in_channels)
        if predictor_cls.needs_union_features and predictor.get('use_vision', True):
            self.union_feature_extractor = MODELS.build(union_feature_extractor)
            union_channels = self.union_feature_extractor.out_channels
        predictor.update(union_channels=union_channels)
        self.predictor = MODELS.build(predictor)
        self.loss_rel = MODELS.build(loss_rel)
        self.loss_obj = MODELS.build(loss_obj)

    # -- initialisation -------------------------------------------------------------------
    def init_weights(self) -> None:
        """Default init, then the frequency bias from the statistics and the class embeddings
        from GloVe (only at training start; a checkpoint brings them at test time)."""
        super().init_weights()
        pred = self.predictor
        glove_dir = getattr(pred, 'glove_dir', None)
        needs_names = pred.uses_word_vectors and glove_dir is not None
        stats = None
        if pred.uses_statistics or needs_names:
            stats = self.load_statistics()
        if pred.uses_statistics:
            pred.load_statistics(stats)
        if pred.uses_word_vectors:
            names = self._object_names(stats)
            pred.load_word_vectors(names, glove_dir, key='model.relation_head.predictor.glove_dir')

    def load_statistics(self) -> dict:
        """The frequency statistics named by the ``statistics`` config key."""
        cfg = self.statistics_cfg
        if cfg is None:
            raise ValueError(
                f'{type(self.predictor).__name__} needs the training-split frequency statistics: '
                'set `model.relation_head.statistics=dict(dataset=<train dataset config>)`')
        if 'pred_dist' in cfg:
            return cfg
        if 'dataset' not in cfg:
            raise ValueError('model.relation_head.statistics needs `dataset` (the training '
                             'dataset or its config); SGGStatisticsHook sets it under a Runner')
        from .statistics import get_statistics  # the dataset side of ovkit.sgg
        cfg = dict(cfg)
        return get_statistics(cfg.pop('dataset'), **cfg)

    def _object_names(self, stats: Optional[dict]) -> List[str]:
        if stats is None or stats.get('obj_classes') is None:
            return ['__background__'] + [f'class_{i}' for i in range(1, self.num_classes + 1)]
        names = list(stats['obj_classes'])
        if len(names) == self.num_classes:
            names = ['__background__'] + names
        if len(names) != self.num_classes + 1:
            raise ValueError(f'the statistics name {len(names)} object classes, the relation '
                             f'head has num_classes={self.num_classes}')
        return names

    # -- shared forward -------------------------------------------------------------------
    def _features(self, feats: Tuple[Tensor], proposals: List[InstanceData],
                  rel_pairs: List[Tensor]):
        roi_feats = union_feats = None
        if hasattr(self, 'box_feature_extractor'):
            roi_feats = self.box_feature_extractor(feats, [p.bboxes for p in proposals])
        if hasattr(self, 'union_feature_extractor'):
            union_feats = self.union_feature_extractor(
                feats, [p.bboxes for p in proposals], rel_pairs,
                [p.metainfo['img_shape'] for p in proposals])
        return roi_feats, union_feats

    def _run(self, feats, proposals, rel_pairs, rel_labels=None, rel_binarys=None):
        roi_feats, union_feats = self._features(feats, proposals, rel_pairs)
        if roi_feats is None:  # predictors that read no feature still get a [N, 0] tensor
            n = sum(len(p) for p in proposals)
            roi_feats = feats[0].new_zeros((n, 0))
        return self.predictor(proposals, rel_pairs, roi_feats, union_feats,
                              rel_labels=rel_labels, rel_binarys=rel_binarys)

    # -- training -------------------------------------------------------------------------
    def sample(self, proposals: List[InstanceData], gt_relations: List[InstanceData],
               gt_instances: Optional[List[InstanceData]] = None):
        """Training pairs per image (PredCls/SGCls: the proposals are the ground truth)."""
        pairs, labels, binarys = [], [], []
        for i, (prop, rels) in enumerate(zip(proposals, gt_relations)):
            if self.mode == 'sgdet':
                gt = gt_instances[i]
                res = self.sampler.sample_detections(
                    prop.bboxes, prop.labels, gt.bboxes, gt.labels + 1, rels.pairs, rels.labels)
            else:
                res = self.sampler.sample_gt_boxes(len(prop), rels.pairs, rels.labels)
            pairs.append(res.pairs)
            labels.append(res.labels)
            binarys.append(res.binary)
        return pairs, labels, binarys

    def loss(self, feats: Tuple[Tensor], proposals: List[InstanceData],
             gt_relations: List[InstanceData],
             gt_instances: Optional[List[InstanceData]] = None) -> Dict[str, Tensor]:
        """Losses of one batch.

        Args:
            feats: FPN levels of the batch.
            proposals: per image the boxes the head works on, with ``labels`` (SGB layout).
            gt_relations: per image ``pairs`` [R, 2] into the ground-truth boxes and
                ``labels`` [R] in 1..P.
            gt_instances: SGDet, per image the ground-truth ``bboxes`` and ``labels`` (0..C-1).
        """
        keep = [i for i, p in enumerate(proposals) if len(p) > 0]
        if not keep:  # no box anywhere (SGDet): a zero loss that still reaches every parameter
            zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.
            return dict(loss_rel=zero)
        proposals = [proposals[i] for i in keep]
        gt_relations = [gt_relations[i] for i in keep]
        if gt_instances is not None:
            gt_instances = [gt_instances[i] for i in keep]
        with torch.no_grad():
            rel_pairs, rel_labels, rel_binarys = self.sample(proposals, gt_relations,
                                                             gt_instances)
        obj_logits, rel_logits, extra = self._run(feats, proposals, rel_pairs, rel_labels,
                                                  rel_binarys)
        losses = dict(loss_rel=self.loss_rel(torch.cat(rel_logits), torch.cat(rel_labels)))
        obj_logits = torch.cat(obj_logits)
        if self.mode != 'predcls' and obj_logits.requires_grad:
            obj_labels = torch.cat([p.labels for p in proposals]).long()
            losses['loss_refine_obj'] = self.loss_obj(obj_logits, obj_labels)
        losses.update(extra)
        return losses

    # -- testing --------------------------------------------------------------------------
    def predict(self, feats: Tuple[Tensor], proposals: List[InstanceData],
                batch_img_metas: List[dict], rescale: bool = True
                ) -> List[Tuple[InstanceData, InstanceData]]:
        """Scene graphs of a batch.

        Returns:
            list: per image ``(pred_instances, pred_relations)`` as the SGG interface defines
            them (boxes in the original image when ``rescale``; labels 0..C-1; relation rows
            sorted by SGB's triplet score).
        """
        results: List[Optional[Tuple[InstanceData, InstanceData]]] = [None] * len(proposals)
        keep = [i for i, p in enumerate(proposals) if len(p) > 0]
        if keep:
            props = [proposals[i] for i in keep]
            rel_pairs = [self.sampler.test_pairs(p.bboxes, use_gt_box=self.mode != 'sgdet')
                         for p in props]
            obj_logits, rel_logits, _ = self._run(feats, props, rel_pairs)
            for j, i in enumerate(keep):
                results[i] = self._post_process(props[j], obj_logits[j], rel_logits[j],
                                                rel_pairs[j], batch_img_metas[i], rescale)
        for i, res in enumerate(results):
            if res is None:
                results[i] = self._empty_result(feats[0].device)
        return results

    def _empty_result(self, device) -> Tuple[InstanceData, InstanceData]:
        inst = InstanceData(bboxes=torch.zeros((0, 4), device=device),
                            labels=torch.zeros(0, dtype=torch.long, device=device),
                            scores=torch.zeros(0, device=device))
        rels = InstanceData(pairs=torch.zeros((0, 2), dtype=torch.long, device=device),
                            scores=torch.zeros((0, self.num_predicates + 1), device=device),
                            labels=torch.zeros(0, dtype=torch.long, device=device))
        return inst, rels

    def _post_process(self, proposal: InstanceData, obj_logit: Tensor, rel_logit: Tensor,
                      pairs: Tensor, img_meta: dict, rescale: bool):
        """SGB ``relation_head/inference.py`` for one image."""
        obj_prob = F.softmax(obj_logit, dim=-1)
        obj_prob[:, 0] = 0
        if self.mode == 'sgdet':
            obj_pred = nms_class_assignment(proposal.boxes_per_cls, obj_prob,
                                            self.predictor.later_nms_thr)
            rows = torch.arange(len(obj_pred), device=obj_pred.device)
            obj_scores = obj_prob[rows, obj_pred]
            boxes = proposal.boxes_per_cls[rows, obj_pred]
        else:
            obj_scores, obj_pred = obj_prob[:, 1:].max(dim=1)
            obj_pred = obj_pred + 1
            boxes = proposal.bboxes
        rel_prob = F.softmax(rel_logit, dim=-1)
        rel_scores, rel_class = rel_prob[:, 1:].max(dim=1)
        triple = rel_scores * obj_scores[pairs[:, 0]] * obj_scores[pairs[:, 1]]
        order = torch.sort(triple, descending=True, stable=True)[1]
        if rescale:
            scale = img_meta['scale_factor']
            boxes = scale_boxes(boxes.clone(), [1 / s for s in scale])
        inst = InstanceData(bboxes=boxes, labels=obj_pred - 1, scores=obj_scores)
        rels = InstanceData(pairs=pairs[order], scores=rel_prob[order],
                            labels=rel_class[order] + 1)
        return inst, rels


@HOOKS.register_module()
class SGGStatisticsHook(Hook):
    """Gives the relation head the runner's training set and work dir for its statistics.

    The frequency bias is initialised from statistics of the training split when training
    starts (``init_weights``, after ``before_run``). Unless the config already names them,
    this hook points ``model.relation_head.statistics`` at the runner's training dataset
    (wrappers are unwrapped; the statistics always come from the train split) and caches them
    in the work dir, so a second run reads the ``.npz`` instead of the annotations.
    """
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        head = getattr(model, 'relation_head', None)
        loop = runner.train_loop
        if not isinstance(head, RelationHead) or not isinstance(loop, BaseLoop):
            return  # testing: the checkpoint holds the bias
        cfg = dict(head.statistics_cfg or {})
        if 'pred_dist' in cfg:
            return
        cfg.setdefault('dataset', loop.dataloader.dataset)
        if cfg.get('cache_dir') is None:
            cfg['cache_dir'] = runner.work_dir
        head.statistics_cfg = cfg

