"""Validation loss for mmpretrain classifiers, as an evaluator metric.

mmpretrain's val loop runs the model in ``predict`` mode and logs no loss, so a train/val loss
curve has nothing to read. The predictions already carry the softmax scores, so the
cross-entropy needs no second forward pass: ``-log p(true class)``, averaged over samples
(collected from every process by mmengine before averaging, so each image counts once).
Add it next to the accuracy: ``val_evaluator = [dict(type='Accuracy'),
dict(type='OVKitValLoss')]``; it is logged as ``val/cross_entropy`` (plain cross-entropy,
without the training loss's label smoothing or mixup). The name avoids "loss" on purpose:
mmengine's LogProcessor averages every key matching ``.*loss.*`` over its last 10 values, which
for a once-per-epoch metric would print the mean of the last 10 epochs instead of this one.
"""
from typing import Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmpretrain.registry import METRICS


@METRICS.register_module()
class OVKitValLoss(BaseMetric):
    """Mean cross-entropy of the predicted class distribution against the true label.

    Args:
        eps: floor on the probability before the log (a confident wrong answer stays finite).
        collect_device: 'cpu' or 'gpu' for gathering results across processes.
        prefix: metric name prefix; None gives 'val'.
    """
    default_prefix = 'val'

    def __init__(self, eps: float = 1e-12, collect_device: str = 'cpu',
                 prefix: Optional[str] = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.eps = eps

    def process(self, data_batch, data_samples: Sequence[dict]):
        for sample in data_samples:
            score = torch.as_tensor(sample['pred_score']).float()
            label = int(torch.as_tensor(sample['gt_label']).reshape(-1)[0])
            self.results.append(-torch.log(score[label].clamp_min(self.eps)).item())

    def compute_metrics(self, results: list) -> dict:
        return {'cross_entropy': sum(results) / max(len(results), 1)}
