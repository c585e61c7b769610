"""DetachRPNHead: the objectness branch trains without reaching the shared conv or backbone."""
import torch
from mmdet.registry import MODELS

import ovkit.baron  # noqa: F401  (DetachRPNHead, BaronRPNHead)


def make_head(**kwargs):
    cfg = dict(type='DetachRPNHead', in_channels=8, feat_channels=8,
               anchor_generator=dict(type='AnchorGenerator', scales=[4], ratios=[0.5, 1.0, 2.0],
                                     strides=[4]))
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_structure_one_shared_conv_and_a_conv_relu_conv_objectness_branch():
    head = make_head()
    assert isinstance(head.rpn_conv, torch.nn.Conv2d) and head.rpn_conv.kernel_size == (3, 3)
    kinds = [(type(m).__name__, getattr(m, 'kernel_size', None)) for m in head.rpn_cls]
    assert kinds == [('Conv2d', (3, 3)), ('ReLU', None), ('Conv2d', (1, 1))]
    assert head.rpn_cls[2].out_channels == 3  # 3 anchors x 1 (sigmoid objectness)
    assert head.rpn_reg.out_channels == 12


def test_objectness_gradient_stops_at_the_shared_conv():
    head = make_head()
    head.init_weights()
    x = torch.randn(2, 8, 16, 16, requires_grad=True)
    cls, reg = head.forward_single(x)
    # same numbers as the undetached computation
    shared = torch.relu(head.rpn_conv(x))
    torch.testing.assert_close(cls, head.rpn_cls(shared))
    torch.testing.assert_close(reg, head.rpn_reg(shared))
    cls.sum().backward()
    assert x.grad is None or (x.grad == 0).all()
    assert head.rpn_conv.weight.grad is None
    assert head.rpn_cls[0].weight.grad.abs().sum() > 0
    cls, reg = head.forward_single(x)
    reg.sum().backward()
    assert x.grad.abs().sum() > 0 and head.rpn_conv.weight.grad.abs().sum() > 0


def test_not_a_host_name():
    import mmdet.models  # noqa: F401
    from mmdet.registry import MODELS as HOST
    cls = HOST.get('DetachRPNHead')
    assert cls.__module__.startswith('ovkit')


def test_proposals_under_autocast():
    """mmdet 3.3's RPNHead fails here (mmcv NMS gets bf16 scores with fp32 boxes)."""
    from mmengine.config import ConfigDict
    cfg = ConfigDict(nms_pre=100, max_per_img=50, nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0)
    for kind in ('BaronRPNHead', 'DetachRPNHead'):
        head = make_head(type=kind, bbox_coder=dict(type='DeltaXYWHBBoxCoder',
                                                    target_means=[0.] * 4,
                                                    target_stds=[1.0] * 4))
        x = [torch.randn(1, 8, 16, 16)]
        plain = head.predict_by_feat(*head(x), batch_img_metas=[dict(img_shape=(64, 64))],
                                     cfg=cfg, rescale=False)[0]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            outs = head(x)
            assert outs[0][0].dtype == torch.bfloat16
            low = head.predict_by_feat(*outs, batch_img_metas=[dict(img_shape=(64, 64))],
                                       cfg=cfg, rescale=False)[0]
        assert low.scores.dtype == torch.float32 and 0 < len(low) <= 50
        # the same proposals up to bf16 rounding of the scores
        assert abs(len(low) - len(plain)) <= 2
