"""SGB detector converter: random maskrcnn-benchmark state dicts with the real names and
shapes -> mmdet FasterRCNN (strict load) with SGB's geometry, and the converted model computes
what maskrcnn-benchmark computes: features, RPN proposals, RoI features, box head boxes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ovkit.sgg  # noqa: F401  (registers the SGB geometry modules)
from ovkit.sgg.convert_sgb_detector import convert, main
from tests.sgg import maskrcnn_render as mr

ASPECT_RATIOS = [0.23232838, 0.63365731, 1.28478321, 3.15089189]     # SGB's relation yaml
ANCHOR_STRIDES = (4, 8, 16, 32, 64)
ANCHOR_SIZES = (32, 64, 128, 256, 512)


def sgb_state_dict(blocks=(3, 4, 23, 3), groups=32, width=8, num_classes=151, mlp=4096,
                   agnostic=False, device='cpu', seed=0):
    """A randomly initialised state dict of maskrcnn-benchmark's GeneralizedRCNN as built by
    SGB's ``e2e_relation_detector_X_101_32_8_FPN_1x.yaml`` (names and shapes follow
    ``modeling/backbone/{resnet,fpn}.py``, ``rpn/rpn.py``, ``roi_heads/box_head/*``)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}

    def rand(*shape, positive=False, std=0.1):
        if device == 'meta':
            return torch.empty(*shape, device='meta')
        t = torch.randn(*shape, generator=g) * std
        return t.abs() + 0.5 if positive else t

    def conv(name, cout, cin, k, bias=False):
        # fan-in scaling keeps the activations of a deep random network near 1
        sd[f'{name}.weight'] = rand(cout, cin, k, k, std=(cin * k * k) ** -0.5)
        if bias:
            sd[f'{name}.bias'] = rand(cout)

    def frozen_bn(name, c):            # FrozenBatchNorm2d buffers
        sd[f'{name}.weight'] = rand(c, positive=True)
        sd[f'{name}.bias'] = rand(c)
        sd[f'{name}.running_mean'] = rand(c)
        sd[f'{name}.running_var'] = rand(c, positive=True)

    conv('backbone.body.stem.conv1', 64, 3, 7)
    frozen_bn('backbone.body.stem.bn1', 64)
    cin = 64
    for i, n in enumerate(blocks, 1):
        mid, out = groups * width * 2 ** (i - 1), 256 * 2 ** (i - 1)
        for b in range(n):
            p = f'backbone.body.layer{i}.{b}'
            if cin != out:
                conv(f'{p}.downsample.0', out, cin, 1)
                frozen_bn(f'{p}.downsample.1', out)
            conv(f'{p}.conv1', mid, cin, 1)
            frozen_bn(f'{p}.bn1', mid)
            conv(f'{p}.conv2', mid, mid // groups, 3)
            frozen_bn(f'{p}.bn2', mid)
            conv(f'{p}.conv3', out, mid, 1)
            frozen_bn(f'{p}.bn3', out)
            cin = out
    for idx, c in enumerate((256, 512, 1024, 2048), 1):
        conv(f'backbone.fpn.fpn_inner{idx}', 256, c, 1, bias=True)
        conv(f'backbone.fpn.fpn_layer{idx}', 256, 256, 3, bias=True)
    a = len(ASPECT_RATIOS)
    conv('rpn.head.conv', 256, 256, 3, bias=True)
    conv('rpn.head.cls_logits', a, 256, 1, bias=True)
    conv('rpn.head.bbox_pred', 4 * a, 256, 1, bias=True)
    for lvl, (stride, size) in enumerate(zip(ANCHOR_STRIDES, ANCHOR_SIZES)):
        # buffers of the real model (tiny, so real tensors even on the meta device)
        sd[f'rpn.anchor_generator.cell_anchors.{lvl}'] = mr.generate_anchors(
            stride, (size, ), ASPECT_RATIOS)
    for name, shape in (('fc6', (mlp, 256 * 7 * 7)), ('fc7', (mlp, mlp)),
                        ('cls_score', (num_classes, mlp)),
                        ('bbox_pred', ((2 if agnostic else num_classes) * 4, mlp))):
        part = 'feature_extractor' if name.startswith('fc') else 'predictor'
        sd[f'roi_heads.box.{part}.{name}.weight'] = rand(*shape)
        sd[f'roi_heads.box.{part}.{name}.bias'] = rand(shape[0])
    return sd


def mmdet_faster_rcnn(depth=101, base_width=8, num_classes=150, mlp=4096, agnostic=False,
                      rpn_pre=6000, rpn_post=1000):
    """mmdet's X-101-32x8d FPN Faster R-CNN (configs/resnext) with SGB's heads and the
    maskrcnn-benchmark geometry of docs/sgg.md ("Detector settings")."""
    return dict(
        type='FasterRCNN',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[102.9801, 115.9465, 122.7717],
                               std=[1.0, 1.0, 1.0], bgr_to_rgb=False, pad_size_divisor=32),
        backbone=dict(type='ResNeXt', depth=depth, groups=32, base_width=base_width,
                      num_stages=4, out_indices=(0, 1, 2, 3), frozen_stages=4,
                      norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
                      style='pytorch'),
        neck=dict(type='FPN', in_channels=[256, 512, 1024, 2048], out_channels=256, num_outs=5),
        rpn_head=dict(
            type='RPNHead', in_channels=256, feat_channels=256,
            anchor_generator=dict(type='SGBAnchorGenerator', strides=list(ANCHOR_STRIDES),
                                  sizes=list(ANCHOR_SIZES), ratios=ASPECT_RATIOS),
            bbox_coder=dict(type='SGBDeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(
            type='StandardRoIHead',
            bbox_roi_extractor=dict(type='SGBRoIExtractor',
                                    roi_layer=dict(type='RoIAlign', output_size=7,
                                                   sampling_ratio=2, aligned=False),
                                    out_channels=256, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(type='Shared2FCBBoxHead', in_channels=256, fc_out_channels=mlp,
                           roi_feat_size=7, num_classes=num_classes,
                           reg_class_agnostic=agnostic,
                           bbox_coder=dict(type='SGBDeltaXYWHBBoxCoder', target_means=[0.0] * 4,
                                           target_stds=[0.1, 0.1, 0.2, 0.2]),
                           loss_cls=dict(type='CrossEntropyLoss', loss_weight=1.0),
                           loss_bbox=dict(type='L1Loss', loss_weight=1.0))),
        train_cfg=None,
        test_cfg=dict(rpn=dict(nms_pre=rpn_pre, max_per_img=rpn_post,
                               nms=dict(type='nms', iou_threshold=0.7, offset=1),
                               min_bbox_size=-1),
                      rcnn=dict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.3,
                                                         offset=1),
                                max_per_img=80)))


def build(cfg, device='cpu'):
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope
    register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope('mmdet'), torch.device(device):
        return MODELS.build(ConfigDict(cfg))


def test_full_size_names_and_shapes_match_mmdet():
    """The real X-101-32x8d detector (built on the meta device: no memory)."""
    src = sgb_state_dict(device='meta')
    out, skipped = convert(src)
    target = build(mmdet_faster_rcnn(), device='meta').state_dict()
    assert sorted(out) == sorted(target)
    bad = [k for k in target if tuple(out[k].shape) != tuple(target[k].shape)]
    assert not bad, bad[:5]
    assert skipped == []                  # the cell anchors are checked, not converted
    # stem 1 conv + 4 BN buffers; 33 blocks x (3 convs + 3 x 4); 4 downsamples x 5;
    # FPN 4 x 2 convs x 2; RPN 3 convs x 2 + 5 anchor buffers; box head 4 linears x 2
    assert len(src) == 5 + 33 * 15 + 4 * 5 + 16 + 11 + 8


def ref_features(sd, x, blocks, groups):
    """maskrcnn-benchmark's ResNet (FrozenBN, STRIDE_IN_1X1=False) + FPN, functionally."""
    def fbn(t, p):
        scale = sd[f'{p}.weight'] * sd[f'{p}.running_var'].rsqrt()
        bias = sd[f'{p}.bias'] - sd[f'{p}.running_mean'] * scale
        return t * scale[None, :, None, None] + bias[None, :, None, None]

    x = F.conv2d(x, sd['backbone.body.stem.conv1.weight'], stride=2, padding=3)
    x = F.max_pool2d(F.relu(fbn(x, 'backbone.body.stem.bn1')), 3, 2, 1)
    feats = []
    for i, n in enumerate(blocks, 1):
        for b in range(n):
            p = f'backbone.body.layer{i}.{b}'
            stride = 2 if b == 0 and i > 1 else 1
            out = F.relu(fbn(F.conv2d(x, sd[f'{p}.conv1.weight']), f'{p}.bn1'))
            out = F.relu(fbn(F.conv2d(out, sd[f'{p}.conv2.weight'], stride=stride, padding=1,
                                      groups=groups), f'{p}.bn2'))
            out = fbn(F.conv2d(out, sd[f'{p}.conv3.weight']), f'{p}.bn3')
            idn = x
            if f'{p}.downsample.0.weight' in sd:
                idn = fbn(F.conv2d(x, sd[f'{p}.downsample.0.weight'], stride=stride),
                          f'{p}.downsample.1')
            x = F.relu(out + idn)
        feats.append(x)

    def conv(t, name, pad):
        return F.conv2d(t, sd[f'backbone.fpn.{name}.weight'], sd[f'backbone.fpn.{name}.bias'],
                        padding=pad)
    last = conv(feats[3], 'fpn_inner4', 0)
    results = [conv(last, 'fpn_layer4', 1)]
    for idx in (3, 2, 1):
        last = conv(feats[idx - 1], f'fpn_inner{idx}', 0) + F.interpolate(
            last, scale_factor=2, mode='nearest')
        results.insert(0, conv(last, f'fpn_layer{idx}', 1))
    results.append(F.max_pool2d(results[-1], 1, 2, 0))
    return results


def test_converted_model_computes_what_maskrcnn_computes():
    """X-50-32x4d with small heads, strict load; then the SGDet detector chain against
    maskrcnn-benchmark rendered from its formulas (tests/sgg/maskrcnn_render.py): features,
    RPN outputs, RPN proposals (anchors, BoxCoder, clip, +1 NMS, per-level and overall
    top-k), RoI features (LevelMapper + ROIAlign), box head scores and decoded boxes."""
    torch.manual_seed(0)
    blocks = (3, 4, 6, 3)
    src = sgb_state_dict(blocks=blocks, width=4, num_classes=6, mlp=32)
    out, _ = convert(src)
    model = build(mmdet_faster_rcnn(depth=50, base_width=4, num_classes=5, mlp=32,
                                    rpn_pre=300, rpn_post=100))
    model.load_state_dict(out, strict=True)
    model.eval()
    x = torch.randn(1, 3, 64, 96)
    meta = dict(img_shape=(64, 96), scale_factor=(1.0, 1.0))
    with torch.no_grad():
        feats = model.neck(model.backbone(x))
        ref = ref_features(src, x, blocks, 32)
        assert len(feats) == 5
        for a, b in zip(feats, ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        cls, reg = model.rpn_head(list(feats))
        for lvl, f in enumerate(ref):
            t = F.relu(F.conv2d(f, src['rpn.head.conv.weight'], src['rpn.head.conv.bias'],
                                padding=1))
            torch.testing.assert_close(cls[lvl], F.conv2d(t, src['rpn.head.cls_logits.weight'],
                                                          src['rpn.head.cls_logits.bias']),
                                       rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(reg[lvl], F.conv2d(t, src['rpn.head.bbox_pred.weight'],
                                                          src['rpn.head.bbox_pred.bias']),
                                       rtol=1e-4, atol=1e-4)

        # RPN proposals: SGB's post-processing on the same RPN outputs (PRE_NMS_TOP_N 300 per
        # level, POST_NMS_TOP_N 1000 per level, FPN_POST_NMS_TOP_N 100, NMS 0.7, MIN_SIZE 0)
        props = model.rpn_head.predict_by_feat(cls, reg, batch_img_metas=[meta])[0]
        cells = [mr.generate_anchors(st, (sz, ), ASPECT_RATIOS)
                 for st, sz in zip(ANCHOR_STRIDES, ANCHOR_SIZES)]
        ref_boxes, ref_scores = mr.rpn_proposals(
            [c[0] for c in cls], [r[0] for r in reg], cells, ANCHOR_STRIDES, (64, 96),
            pre_nms_top_n=300, post_nms_top_n=1000, fpn_post_nms_top_n=100, nms_thresh=0.7)
        assert len(props) == len(ref_boxes) == 100
        torch.testing.assert_close(props.scores, ref_scores)
        torch.testing.assert_close(props.bboxes, ref_boxes, rtol=0, atol=1e-4)

        # RoI features on proposals and boxes of every FPN level (incl. the level borders)
        boxes = torch.cat([props.bboxes[:12], torch.tensor(
            [[0., 0., 111., 111.], [0., 0., 110., 110.], [5., 5., 228., 228.],
             [0., 0., 447., 447.], [0., 0., 600., 500.]])])
        rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], 1)
        roi_feats = model.roi_head.bbox_roi_extractor(feats[:4], rois)
        levels = mr.level_mapper(boxes)
        assert set(levels.tolist()) == {0, 1, 2, 3}
        ref_rois = torch.stack([mr.roi_align(ref[lvl][0], box[None], 1 / ANCHOR_STRIDES[lvl])[0]
                                for lvl, box in zip(levels.tolist(), boxes)])
        torch.testing.assert_close(roi_feats, ref_rois, rtol=1e-4, atol=1e-4)

        # box head: scores and class boxes (BoxCoder weights 10, 10, 5, 5, clipped)
        cls_score, bbox_pred = model.roi_head.bbox_head(roi_feats)
        dets = model.roi_head.bbox_head.predict_by_feat(
            (rois, ), (cls_score, ), (bbox_pred, ), [meta], rcnn_test_cfg=None)[0]
        h = ref_rois.flatten(1)
        for fc in ('fc6', 'fc7'):
            p = f'roi_heads.box.feature_extractor.{fc}'
            h = F.relu(F.linear(h, src[f'{p}.weight'], src[f'{p}.bias']))
        p = 'roi_heads.box.predictor'
        logits = F.linear(h, src[f'{p}.cls_score.weight'], src[f'{p}.cls_score.bias'])
        deltas = F.linear(h, src[f'{p}.bbox_pred.weight'], src[f'{p}.bbox_pred.bias'])
        ref_dets = mr.clip_to_image(mr.decode(deltas, boxes, (10., 10., 5., 5.)), 96, 64)
    # mmdet: foreground classes first, background last; no background regressor
    torch.testing.assert_close(cls_score, torch.cat([logits[:, 1:], logits[:, :1]], 1),
                               rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bbox_pred, deltas[:, 4:], rtol=1e-4, atol=1e-4)
    # the class probabilities of every object class are unchanged by the reordering
    torch.testing.assert_close(dets.scores[:, :-1], logits.softmax(1)[:, 1:],
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dets.bboxes, ref_dets[:, 4:], rtol=0, atol=1e-3)


def test_class_agnostic_regressor():
    """CLS_AGNOSTIC_BBOX_REG: 2 x 4 rows (background, foreground) -> mmdet's 4."""
    src = sgb_state_dict(blocks=(1, 1, 1, 1), width=4, num_classes=6, mlp=16, agnostic=True)
    out, _ = convert(src)
    head = build(mmdet_faster_rcnn(num_classes=5, mlp=16, agnostic=True)['roi_head']['bbox_head'])
    head.load_state_dict({k[len('roi_head.bbox_head.'):]: v for k, v in out.items()
                          if k.startswith('roi_head.bbox_head.')}, strict=True)
    x = torch.randn(2, 256, 7, 7)
    with torch.no_grad():
        _, deltas = head(x)
        h = x.flatten(1)
        for fc in ('fc6', 'fc7'):
            p = f'roi_heads.box.feature_extractor.{fc}'
            h = F.relu(F.linear(h, src[f'{p}.weight'], src[f'{p}.bias']))
        ref = F.linear(h, src['roi_heads.box.predictor.bbox_pred.weight'],
                       src['roi_heads.box.predictor.bbox_pred.bias'])
    torch.testing.assert_close(deltas, ref[:, 4:])


def test_cli_round_trip(tmp_path, capsys):
    src = sgb_state_dict(blocks=(1, 1, 1, 1), width=4, num_classes=4, mlp=8)
    torch.save({'model': {f'module.{k}': v for k, v in src.items()}, 'iteration': 3},
               tmp_path / 'model_final.pth')
    main([str(tmp_path / 'model_final.pth'), str(tmp_path / 'mmdet.pth')])
    out = capsys.readouterr().out
    assert '3 object classes' in out and 'bgr_to_rgb=False' in out
    ckpt = torch.load(tmp_path / 'mmdet.pth', map_location='cpu')
    assert ckpt['meta']['num_classes'] == 3
    assert 'RPN cell anchors checked' in out and 'SGBDeltaXYWHBBoxCoder' in out
    assert ckpt['meta']['anchor_generator'] == dict(
        type='SGBAnchorGenerator', strides=list(ANCHOR_STRIDES),
        sizes=[float(x) for x in ANCHOR_SIZES], ratios=ASPECT_RATIOS)
    assert ckpt['meta']['cell_anchors'][0] == [[-30, -6, 33, 9], [-18, -10, 21, 13],
                                               [-14, -18, 17, 21], [-6, -22, 9, 25]]
    # a detector trained with other anchors is refused, naming the options to set
    with pytest.raises(ValueError, match='--anchor-sizes'):
        main([str(tmp_path / 'model_final.pth'), str(tmp_path / 'x.pth'),
              '--anchor-sizes', '16', '32', '64', '128', '256'])
    sd = ckpt['state_dict']
    torch.testing.assert_close(sd['backbone.layer2.0.conv2.weight'],
                               src['backbone.body.layer2.0.conv2.weight'])
    torch.testing.assert_close(sd['neck.lateral_convs.0.conv.weight'],
                               src['backbone.fpn.fpn_inner1.weight'])
    # folded frozen BN: mmdet's BN (eps 1e-5, eval) reproduces x * w / sqrt(v) + b - m w/sqrt(v)
    bn = torch.nn.BatchNorm2d(64).eval()
    bn.load_state_dict({k[len('backbone.bn1.'):]: v for k, v in sd.items()
                        if k.startswith('backbone.bn1.')})
    x = torch.randn(2, 64, 3, 3)
    p = 'backbone.body.stem.bn1'
    scale = src[f'{p}.weight'] / src[f'{p}.running_var'].sqrt()
    ref = x * scale[None, :, None, None] + (src[f'{p}.bias'] -
                                            src[f'{p}.running_mean'] * scale)[None, :, None, None]
    with torch.no_grad():
        torch.testing.assert_close(bn(x), ref)
    np.testing.assert_allclose(sd['roi_head.bbox_head.fc_cls.bias'].numpy(),
                               src['roi_heads.box.predictor.cls_score.bias'][[1, 2, 3, 0]].numpy())


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='pretrained_faster_rcnn/model_final.pth'):
        main([str(tmp_path / 'nope.pth'), str(tmp_path / 'out.pth')])
    with pytest.raises(KeyError, match='not a maskrcnn-benchmark Faster R-CNN'):
        convert({'backbone.body.stem.conv1.weight': torch.zeros(1)})


class _Planted:
    """Unpickling this would run os.system: the converter must refuse it unread."""

    def __reduce__(self):
        import os
        return os.system, ('touch SHOULD_NOT_EXIST',)


def test_a_pickle_with_other_objects_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / 'model_final.pth'
    torch.save({'model': {'w': torch.zeros(1)}, 'extra': _Planted()}, src)
    with pytest.raises(RuntimeError, match=r'model_final\.pth could not be loaded as a checkpoint '
                       r'of tensors .*never unpickles other objects'):
        main([str(src), str(tmp_path / 'out.pth')])
    assert not (tmp_path / 'SHOULD_NOT_EXIST').exists()
