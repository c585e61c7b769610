"""OVKitValLoss equals cross-entropy of the logits, computed independently."""
import torch
import torch.nn.functional as F
from mmpretrain.structures import DataSample

from ovkit.vit.metric import OVKitValLoss


def test_val_loss_is_mean_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 5, generator=g) * 3
    labels = torch.randint(0, 5, (10, ), generator=g)
    metric = OVKitValLoss()
    metric.dataset_meta = {}
    for chunk in (slice(0, 3), slice(3, 10)):  # two batches of unequal size
        samples = [DataSample().set_pred_score(s).set_gt_label(int(y)).to_dict()
                   for s, y in zip(logits[chunk].softmax(1), labels[chunk])]
        metric.process(None, samples)
    result = metric.evaluate(size=10)
    expected = F.cross_entropy(logits, labels).item()  # per-sample mean, not per-batch
    assert abs(result['val/cross_entropy'] - expected) < 1e-5


def test_confident_mistake_stays_finite():
    metric = OVKitValLoss()
    metric.process(None, [DataSample().set_pred_score(torch.tensor([1., 0.]))
                          .set_gt_label(1).to_dict()])
    value = metric.compute_metrics(metric.results)['cross_entropy']
    assert value == torch.tensor(1e-12).log().neg().item()
