"""Convert SGB's pretrained Faster R-CNN (maskrcnn-benchmark names) to an mmdet state dict.

Scene-Graph-Benchmark.pytorch releases its VG150 detector (``pretrained_faster_rcnn/
model_final.pth``, X-101-32x8d FPN, ``configs/e2e_relation_detector_X_101_32_8_FPN_1x.yaml``)
in maskrcnn-benchmark's layout. This turns it into the state dict of mmdet's
``FasterRCNN`` with ``ResNeXt(depth=101, groups=32, base_width=8, style='pytorch')``, ``FPN``
(4 inputs, 5 outputs), ``RPNHead`` and ``Shared2FCBBoxHead(fc_out_channels=4096,
num_classes=150)``:

- ``backbone.body.stem.*`` / ``backbone.body.layerN.*`` -> ``backbone.*`` (same module names;
  maskrcnn's ``STRIDE_IN_1X1=False`` is mmdet's ``style='pytorch'``);
- FrozenBatchNorm2d (``x * w / sqrt(v) + b - m * w / sqrt(v)``, no eps) -> BatchNorm2d with
  the affine folded in: ``weight = w / sqrt(v)``, ``bias = b - m * weight``, ``running_mean =
  0``, ``running_var = 1 - eps``, so mmdet's BN in eval mode computes exactly the same;
- ``backbone.fpn.fpn_inner{i}`` / ``fpn_layer{i}`` -> ``neck.lateral_convs.{i-1}.conv`` /
  ``neck.fpn_convs.{i-1}.conv``;
- ``rpn.head.{conv,cls_logits,bbox_pred}`` -> ``rpn_head.{rpn_conv,rpn_cls,rpn_reg}`` (one
  sigmoid logit and 4 deltas per anchor, anchors in the yaml's aspect-ratio order);
- ``roi_heads.box.feature_extractor.fc6/fc7`` -> ``roi_head.bbox_head.shared_fcs.0/1``;
  ``predictor.cls_score`` (background first, 151 rows) -> ``fc_cls`` (background last);
  ``predictor.bbox_pred`` (151 x 4 rows) -> ``fc_reg`` without the background's 4 rows;
- ``rpn.anchor_generator.cell_anchors.{i}`` (buffers, not weights) are checked against
  ``SGBAnchorGenerator`` for the yaml's ``ANCHOR_STRIDE`` / ``ANCHOR_SIZES`` / ``ASPECT_RATIOS``
  (SGB's VG values by default) and recorded in the output's ``meta``.

Relation/attribute head weights are left out (listed). The weights only compute what
maskrcnn-benchmark computed with its geometry: ``SGBAnchorGenerator``,
``SGBDeltaXYWHBBoxCoder`` (RPN and box head), ``SGBRoIExtractor`` with ``RoIAlign(7,
sampling_ratio=2, aligned=False)``, NMS with ``offset=1`` (``ovkit/sgg/sgb_geometry.py``;
docs/sgg.md has the config). The input must be what maskrcnn-benchmark fed it: BGR, 0..255,
mean [102.9801, 115.9465, 122.7717], std 1 (mmdet ``DetDataPreprocessor(mean=...,
std=[1, 1, 1], bgr_to_rgb=False)``).

    python tools/model_converters/sgb_detector.py model_final.pth vg150_faster_rcnn_x101.pth
"""
import argparse
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch

from .sgb_geometry import SGB_VG_ANCHORS, sgb_cell_anchors

SGB_PIXEL_MEAN = [102.9801, 115.9465, 122.7717]
SGB_PIXEL_STD = [1.0, 1.0, 1.0]
BN_SUFFIXES = ('weight', 'bias', 'running_mean', 'running_var')

_RULES = [
    (r'backbone\.body\.stem\.conv1\.weight', 'backbone.conv1.weight'),
    (r'backbone\.body\.(layer\d+\.\d+\.(?:conv\d|downsample\.0)\.weight)', r'backbone.\1'),
    (r'rpn\.head\.conv\.(weight|bias)', r'rpn_head.rpn_conv.\1'),
    (r'rpn\.head\.cls_logits\.(weight|bias)', r'rpn_head.rpn_cls.\1'),
    (r'rpn\.head\.bbox_pred\.(weight|bias)', r'rpn_head.rpn_reg.\1'),
    (r'roi_heads\.box\.feature_extractor\.fc6\.(weight|bias)',
     r'roi_head.bbox_head.shared_fcs.0.\1'),
    (r'roi_heads\.box\.feature_extractor\.fc7\.(weight|bias)',
     r'roi_head.bbox_head.shared_fcs.1.\1'),
]
_FPN = re.compile(r'backbone\.fpn\.fpn_(inner|layer)(\d+)\.(weight|bias)')
_BN = re.compile(r'backbone\.body\.(stem\.bn1|layer\d+\.\d+\.(?:bn\d|downsample\.1))\.'
                 r'(weight|bias|running_mean|running_var)$')
_CELL = re.compile(r'rpn\.anchor_generator\.cell_anchors\.(\d+)')


def check_cell_anchors(state: Dict[str, torch.Tensor], anchors: dict = SGB_VG_ANCHORS
                       ) -> List[List[List[float]]]:
    """The checkpoint's RPN cell anchors, checked against ``SGBAnchorGenerator``'s.

    Args:
        state: maskrcnn-benchmark state dict (``module.`` prefix stripped).
        anchors: ``dict(strides, sizes, ratios)`` of the yaml the detector was trained with.

    Returns:
        the cell anchors per level (lists), or [] when the file has none.
    """
    found = {int(m.group(1)): v for k, v in state.items() if (m := _CELL.fullmatch(k))}
    if not found:
        return []
    strides, sizes, ratios = anchors['strides'], anchors['sizes'], anchors['ratios']
    if sorted(found) != list(range(len(strides))):
        raise ValueError(f'the checkpoint has cell anchors for levels {sorted(found)}, the '
                         f'anchor settings {len(strides)} levels (strides {strides})')
    for lvl, (stride, size) in enumerate(zip(strides, sizes)):
        sizes_l = size if isinstance(size, (tuple, list)) else (size, )
        expect = torch.from_numpy(sgb_cell_anchors(stride, sizes_l, ratios)).float()
        got = found[lvl].float()
        if got.shape != expect.shape or not torch.equal(got, expect):
            raise ValueError(
                f'rpn.anchor_generator.cell_anchors.{lvl} of the checkpoint is not '
                f'maskrcnn-benchmark\'s generate_anchors(stride={stride}, sizes={sizes_l}, '
                f'aspect_ratios={tuple(ratios)}) (got {got.tolist()}, expected '
                f'{expect.tolist()}): pass the RPN.ANCHOR_STRIDE / ANCHOR_SIZES / '
                'ASPECT_RATIOS of the yaml the detector was trained with (--anchor-strides, '
                '--anchor-sizes, --aspect-ratios) and use the same in SGBAnchorGenerator')
    return [found[i].tolist() for i in range(len(strides))]


def _strip(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                       for k, v in state.items())


def _rename(key: str):
    m = _FPN.fullmatch(key)
    if m:                                        # maskrcnn numbers FPN levels from 1
        kind = 'lateral_convs' if m.group(1) == 'inner' else 'fpn_convs'
        return f'neck.{kind}.{int(m.group(2)) - 1}.conv.{m.group(3)}'
    for pattern, target in _RULES:
        m = re.fullmatch(pattern, key)
        if m:
            return m.expand(target)
    return None


def convert(state: Dict[str, torch.Tensor], bn_eps: float = 1e-5,
            anchors: Optional[dict] = SGB_VG_ANCHORS
            ) -> Tuple['OrderedDict[str, torch.Tensor]', List[str]]:
    """maskrcnn-benchmark Faster R-CNN state dict -> mmdet ``FasterRCNN`` state dict.

    Args:
        state: the ``model`` entry of an SGB checkpoint (a ``module.`` prefix is stripped).
        bn_eps: the eps of mmdet's BatchNorm2d the frozen BNs are folded for.
        anchors: ``dict(strides, sizes, ratios)`` the cell anchors are checked against
            (:func:`check_cell_anchors`), or None to skip the check.

    Returns:
        (mmdet state dict, source keys left out).
    """
    state = _strip(state)
    if anchors is not None:
        check_cell_anchors(state, anchors)
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    skipped: List[str] = []
    bns: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        m = _BN.match(key)
        if m:
            bns.setdefault(m.group(1), {})[m.group(2)] = value
            continue
        new = _rename(key)
        if new is not None:
            out[new] = value
        elif key.startswith('roi_heads.box.predictor.'):
            continue                              # handled below
        elif _CELL.fullmatch(key) and anchors is not None:
            continue                              # checked: SGBAnchorGenerator computes them
        else:
            skipped.append(key)
    for name, parts in bns.items():
        missing = [s for s in BN_SUFFIXES if s not in parts]
        if missing:
            raise KeyError(f'frozen BN backbone.body.{name} lacks {missing}')
        scale = parts['weight'].double() / parts['running_var'].double().sqrt()
        bias = parts['bias'].double() - parts['running_mean'].double() * scale
        dst = 'backbone.' + ('bn1' if name == 'stem.bn1' else name)
        dtype = parts['weight'].dtype
        out[f'{dst}.weight'] = scale.to(dtype)
        out[f'{dst}.bias'] = bias.to(dtype)
        out[f'{dst}.running_mean'] = torch.zeros_like(parts['running_mean'])
        out[f'{dst}.running_var'] = torch.full_like(parts['running_var'], 1.0 - bn_eps)
        out[f'{dst}.num_batches_tracked'] = torch.tensor(0, dtype=torch.long)

    pre = 'roi_heads.box.predictor.'
    if pre + 'cls_score.weight' not in state:
        raise KeyError('no roi_heads.box.predictor.cls_score.weight: not a maskrcnn-benchmark '
                       'Faster R-CNN state dict (expected SGB\'s pretrained_faster_rcnn '
                       'checkpoint)')
    cls_w, cls_b = state[pre + 'cls_score.weight'], state[pre + 'cls_score.bias']
    num_classes = cls_w.shape[0] - 1
    order = torch.cat([torch.arange(1, num_classes + 1), torch.zeros(1, dtype=torch.long)])
    out['roi_head.bbox_head.fc_cls.weight'] = cls_w[order].clone()
    out['roi_head.bbox_head.fc_cls.bias'] = cls_b[order].clone()
    reg_w, reg_b = state[pre + 'bbox_pred.weight'], state[pre + 'bbox_pred.bias']
    # class-specific: (C + 1) x 4 rows, background first; agnostic (CLS_AGNOSTIC_BBOX_REG):
    # 2 x 4 rows, the second being the foreground regressor
    out['roi_head.bbox_head.fc_reg.weight'] = reg_w[4:].clone()
    out['roi_head.bbox_head.fc_reg.bias'] = reg_b[4:].clone()
    return out, skipped


def load_sgb_checkpoint(path: str) -> Dict[str, torch.Tensor]:
    """The ``model`` state dict of an SGB / maskrcnn-benchmark checkpoint.

    Loaded with ``weights_only=True``: maskrcnn-benchmark saves plain dicts of tensors and
    numbers (model, optimizer, scheduler, iteration), so nothing else is ever unpickled.

    Args:
        path: the ``.pth`` file.
    """
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(
            f'{path} does not exist; SGB publishes the VG150 detector as '
            'pretrained_faster_rcnn/model_final.pth (README.md of '
            'KaihuaTang/Scene-Graph-Benchmark.pytorch, "Pretrained Models")') from None
    except Exception as e:                      # noqa: BLE001 (unpickling errors vary)
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [repr(e)]
        detail = next((line for line in lines if 'GLOBAL' in line), lines[0])  # torch's long text
        raise RuntimeError(f'{path} could not be loaded as a checkpoint of tensors ({detail}); '
                           "SGB's model_final.pth holds only tensors and numbers, so this file "
                           'is damaged or another kind of file; ovkit never unpickles other '
                           'objects') from None
    state = ckpt.get('model', ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict):
        raise TypeError(f'{path}: expected a state dict or {{"model": state_dict}}')
    return state


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description='SGB (maskrcnn-benchmark) Faster R-CNN checkpoint -> mmdet state dict')
    parser.add_argument('src', help="SGB's pretrained_faster_rcnn/model_final.pth")
    parser.add_argument('dst', help='output .pth for mmdet (load_from / init_cfg)')
    parser.add_argument('--bn-eps', type=float, default=1e-5,
                        help="eps of the mmdet BatchNorm the frozen BNs are folded for")
    parser.add_argument('--anchor-strides', type=int, nargs='+',
                        default=list(SGB_VG_ANCHORS['strides']), help='yaml RPN.ANCHOR_STRIDE')
    parser.add_argument('--anchor-sizes', type=float, nargs='+',
                        default=list(SGB_VG_ANCHORS['sizes']), help='yaml RPN.ANCHOR_SIZES')
    parser.add_argument('--aspect-ratios', type=float, nargs='+',
                        default=list(SGB_VG_ANCHORS['ratios']), help='yaml RPN.ASPECT_RATIOS')
    args = parser.parse_args(argv)
    anchors = dict(strides=tuple(args.anchor_strides), sizes=tuple(args.anchor_sizes),
                   ratios=tuple(args.aspect_ratios))
    state = _strip(load_sgb_checkpoint(args.src))
    cell_anchors = check_cell_anchors(state, anchors)
    out, skipped = convert(state, args.bn_eps, anchors)
    num_classes = out['roi_head.bbox_head.fc_cls.weight'].shape[0] - 1
    meta = dict(source=args.src, converter='ovkit.sgg.convert_sgb_detector',
                num_classes=num_classes, data_preprocessor=dict(
                    mean=SGB_PIXEL_MEAN, std=SGB_PIXEL_STD, bgr_to_rgb=False),
                anchor_generator=dict(type='SGBAnchorGenerator', strides=list(anchors['strides']),
                                      sizes=list(anchors['sizes']),
                                      ratios=list(anchors['ratios'])),
                cell_anchors=cell_anchors)
    torch.save(dict(meta=meta, state_dict=out), args.dst)
    print(f'wrote {args.dst}: {len(out)} tensors, {num_classes} object classes; '
          f'{len(skipped)} source keys left out'
          + (f" ({', '.join(sorted({k.split('.')[0] + '.' + k.split('.')[1] for k in skipped}))})"
             if skipped else ''))
    print(f'feed it BGR 0..255 images: DetDataPreprocessor(mean={SGB_PIXEL_MEAN}, '
          f'std={SGB_PIXEL_STD}, bgr_to_rgb=False)')
    print(f"RPN cell anchors {'checked' if cell_anchors else 'absent from the file'}: use "
          f"{meta['anchor_generator']} with SGBDeltaXYWHBBoxCoder, SGBRoIExtractor, "
          "RoIAlign(aligned=False) and nms offset=1 (docs/sgg.md)")


if __name__ == '__main__':
    main()
