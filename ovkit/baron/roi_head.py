"""RoI head of BARON: mmdet's StandardRoIHead plus the bag-of-regions alignment losses."""
from contextlib import contextmanager

import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.registry import MODELS


@MODELS.register_module()
class BaronRoIHead(StandardRoIHead):
    """StandardRoIHead whose bbox head classifies through CLIP, with optional ``kd``
    (:class:`ovkit.baron.BaronKD`) losses on bags of regions around the RPN proposals.

    The detector hands over the frozen CLIP model (:meth:`set_clip`) and, for each training
    step, the images the bag teacher crops from (:meth:`kd_inputs`); everything else is
    StandardRoIHead's own assignment, sampling, loss and prediction.
    """

    def __init__(self, kd=None, **kwargs):
        super().__init__(**kwargs)
        self.kd = MODELS.build(kd) if kd is not None else None
        self._kd_batch = None
        self.__dict__['_clip'] = None

    def set_clip(self, clip):
        """Give the frozen CLIP to this head and its bbox head (kept outside the module tree)."""
        self.bbox_head.set_clip(clip)
        self.__dict__['_clip'] = clip

    @contextmanager
    def kd_inputs(self, batch_inputs, mean, std):
        """Make the normalised images and the preprocessor's mean/std visible to :meth:`loss`
        for one call (StandardRoIHead.loss receives features and proposals, not images)."""
        self._kd_batch = (batch_inputs, mean, std)
        try:
            yield
        finally:
            self._kd_batch = None

    def boxes_to_words(self, x, rois):
        """Pseudo words of arbitrary boxes: RoI-align features -> the bbox head's layers."""
        feats = self.bbox_roi_extractor(x[:self.bbox_roi_extractor.num_inputs], rois)
        if self.with_shared_head:
            feats = self.shared_head(feats)
        return self.bbox_head.rois_to_words(feats)

    def kd_loss(self, x, rpn_results_list, batch_data_samples, batch_inputs, mean, std):
        """The bag losses alone, on a batch of their own (BARON's separate KD images): ``x``
        their features, ``rpn_results_list`` their proposals (with scores)."""
        if self.kd is None:
            raise RuntimeError('kd_loss needs roi_head.kd (a BaronKD config).')
        return self.kd(
            x, rpn_results_list, batch_inputs, [s.metainfo for s in batch_data_samples],
            mean, std, self._clip, self.boxes_to_words,
            batch_gt_bboxes=[s.gt_instances.bboxes if 'gt_instances' in s
                             else batch_inputs.new_zeros(0, 4) for s in batch_data_samples])

    def loss(self, x, rpn_results_list, batch_data_samples):
        # StandardRoIHead.loss renames the proposals' `bboxes` in place; keep them for the bags.
        proposals = None
        if self.kd is not None and self._kd_batch is not None:
            proposals = [torch.cat([r.bboxes, r.scores[:, None]], dim=1)
                         if 'scores' in r else r.bboxes for r in rpn_results_list]
        losses = super().loss(x, rpn_results_list, batch_data_samples)
        if proposals is not None:
            images, mean, std = self._kd_batch
            losses.update(self.kd(
                x, proposals, images, [s.metainfo for s in batch_data_samples], mean, std,
                self._clip, self.boxes_to_words,
                batch_gt_bboxes=[s.gt_instances.bboxes for s in batch_data_samples]))
        return losses
