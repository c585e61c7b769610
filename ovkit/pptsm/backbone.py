"""ResNetTweaksTSM: PP-TSM's ResNet-vd backbone with a temporal shift in every block.

Written by hand because mmaction2 has no equivalent: its ``ResNetTSM`` has the 7x7 stem, a
strided 1x1 shortcut, ReLU, a fixed 1/8 fold, the opposite shift directions and (R101) a shift
in every second block only. Parameter names follow mmpretrain's ``ResNetV1d`` (``stem.k.conv``,
``layerS.I.convJ``/``bnJ``, ``downsample``), the architecture PP-TSM is a shifted variant of.

Depths 50/101/152 are PaddleVideo's. The shifting depth-18/34 variant is ovkit's extension (for
tiny models): PaddleVideo's ``BasicBlock`` has no temporal shift, and its depth-18/34 branch
cannot be built there (it indexes an int ``in_channels`` and passes ``filter_size`` to a layer
that takes ``kernel_size``), so no Paddle weights exist for it.
"""
import os.path as osp
import re

import torch.nn as nn
import torch.utils.checkpoint as cp
from mmaction.registry import MODELS
from mmcv.cnn import build_activation_layer
from mmengine.logging import MMLogger, print_log
from mmengine.model import BaseModule
from mmengine.runner.checkpoint import _load_checkpoint
from torch.nn.modules.batchnorm import _BatchNorm

from .shift import temporal_shift

PADDLE_ACT = dict(type='LeakyReLU', negative_slope=0.01, inplace=True)


class ConvBNAct(nn.Module):
    """Conv (no bias) + BatchNorm + optional activation: Paddle's ``ConvBNLayer``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size; padding is ``(k - 1) // 2`` as in Paddle.
        stride: convolution stride.
        act_cfg: activation config, or None for no activation.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, act_cfg=None):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              (kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-5)
        self.act = build_activation_layer(act_cfg) if act_cfg else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.act(x) if self.act is not None else x


class _ShiftBlock(nn.Module):
    """Shared forward of the residual blocks: shift the branch input, keep the shortcut."""

    expansion = 1

    def _init_shift(self, num_segments, is_shift, shift_ratio, with_cp):
        self.num_segments = num_segments
        self.is_shift = is_shift
        self.shift_ratio = shift_ratio
        self.with_cp = with_cp

    def _branch(self, x):
        raise NotImplementedError

    def forward(self, x):

        def _inner(x):
            identity = x if self.downsample is None else self.downsample(x)
            y = temporal_shift(x, self.num_segments, self.shift_ratio) if self.is_shift else x
            y = self._branch(y)
            y += identity
            return y

        if self.with_cp and x.requires_grad:
            out = cp.checkpoint(_inner, x, use_reentrant=False)
        else:
            out = _inner(x)
        return self.act(out)


class TweaksBottleneck(_ShiftBlock):
    """Paddle's ``BottleneckBlock``: shift -> 1x1 -> 3x3(stride) -> 1x1, added to the shortcut.

    Args:
        in_channels: input channels.
        planes: bottleneck width (output is ``4 * planes``).
        stride: stride of the 3x3 conv.
        downsample: shortcut module, or None for identity.
        num_segments: frames per clip T.
        is_shift: apply the temporal shift.
        shift_ratio: fold ratio, None for 1/T.
        act_cfg: activation config.
        with_cp: gradient checkpointing of the block.
    """

    expansion = 4

    def __init__(self, in_channels, planes, stride, downsample, num_segments, is_shift,
                 shift_ratio, act_cfg, with_cp=False):
        super().__init__()
        self._init_shift(num_segments, is_shift, shift_ratio, with_cp)
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.act1 = build_activation_layer(act_cfg)
        self.act2 = build_activation_layer(act_cfg)
        self.act = build_activation_layer(act_cfg)
        self.downsample = downsample

    def _branch(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.act2(self.bn2(self.conv2(x)))
        return self.bn3(self.conv3(x))


class TweaksBasicBlock(_ShiftBlock):
    """Depth 18/34 block: shift -> 3x3(stride) -> 3x3, plus shortcut.

    The layers are those of Paddle's ``BasicBlock``; the shift is ovkit's addition (Paddle's
    basic block does not shift, see the module docstring).

    Args:
        in_channels: input channels.
        planes: output channels.
        stride: stride of the first 3x3 conv.
        downsample: shortcut module, or None for identity.
        num_segments: frames per clip T.
        is_shift: apply the temporal shift.
        shift_ratio: fold ratio, None for 1/T.
        act_cfg: activation config.
        with_cp: gradient checkpointing of the block.
    """

    def __init__(self, in_channels, planes, stride, downsample, num_segments, is_shift,
                 shift_ratio, act_cfg, with_cp=False):
        super().__init__()
        self._init_shift(num_segments, is_shift, shift_ratio, with_cp)
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act1 = build_activation_layer(act_cfg)
        self.act = build_activation_layer(act_cfg)
        self.downsample = downsample

    def _branch(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        return self.bn2(self.conv2(x))


@MODELS.register_module()
class ResNetTweaksTSM(BaseModule):
    """PP-TSM backbone (PaddleVideo ``ResNetTweaksTSM``), [N*T, 3, H, W] -> [N*T, C, H/32, W/32].

    ResNet-vd: a stem of three 3x3 convs (3->32 s2, 32->32, 32->64) and a 3x3/2 max pool; in
    bottleneck stages 2-4 the first shortcut is AvgPool(2, 2, ceil_mode) -> 1x1 conv -> BN.
    Every residual block shifts its branch input along time (Paddle's directions, fold 1/T);
    the shortcut sees the unshifted input. Depth 18/34 use the layers of Paddle's basic blocks
    (shortcuts: a strided 1x1 conv, no average pool) with ovkit's shift added: PaddleVideo's
    basic blocks do not shift and its depth-18/34 path cannot be built, so these depths are
    an extension for tiny models, not a PaddleVideo architecture.

    Args:
        depth: 18, 34, 50, 101 or 152.
        num_segments: frames per clip T (the batch is grouped in clips of T frames).
        is_shift: apply the temporal shift (False gives the plain 2D ResNet-vd, an ablation).
        shift_ratio: channel fraction per shifted fold; None means 1/T as in PP-TSM.
        act_cfg: activation; LeakyReLU(0.01) for PaddleVideo >= 2.1 weights, ReLU for 2.0.
        in_channels: image channels.
        base_channels: stage-1 width (64 in PP-TSM; smaller only for tiny test models).
        out_indices: stages whose outputs are returned (a tensor when only one).
        frozen_stages: stages to freeze (0 freezes the stem), -1 for none.
        norm_eval: keep every BatchNorm in eval mode while training.
        with_cp: gradient checkpointing of each block (saves memory, costs a forward).
        pretrained: converted checkpoint to initialise from (``backbone.`` keys or bare keys);
            the file must exist when the model is built and fit it exactly.
        allow_partial: load a ``pretrained`` file that fits only in part (another depth or
            width): the tensors that fit are loaded, the rest keep their initialisation.
        init_cfg: mmengine init config used when ``pretrained`` is None.
    """

    arch_settings = {
        18: (TweaksBasicBlock, (2, 2, 2, 2)),
        34: (TweaksBasicBlock, (3, 4, 6, 3)),
        50: (TweaksBottleneck, (3, 4, 6, 3)),
        101: (TweaksBottleneck, (3, 4, 23, 3)),
        152: (TweaksBottleneck, (3, 8, 36, 3)),
    }

    def __init__(self,
                 depth,
                 num_segments=8,
                 is_shift=True,
                 shift_ratio=None,
                 act_cfg=PADDLE_ACT,
                 in_channels=3,
                 base_channels=64,
                 out_indices=(3, ),
                 frozen_stages=-1,
                 norm_eval=False,
                 with_cp=False,
                 pretrained=None,
                 allow_partial=False,
                 init_cfg=(dict(type='Kaiming', layer='Conv2d', mode='fan_in'),
                           dict(type='Constant', val=1, layer='_BatchNorm'))):
        super().__init__(init_cfg=list(init_cfg) if init_cfg is not None else None)
        if depth not in self.arch_settings:
            raise ValueError(f'ResNetTweaksTSM: depth={depth!r} is not one of '
                             f'{sorted(self.arch_settings)} (model.backbone.depth).')
        if not 0 <= max(out_indices) <= 3:
            raise ValueError(f'ResNetTweaksTSM: out_indices={out_indices} must lie in 0..3.')
        self.depth = depth
        self.num_segments = num_segments
        self.is_shift = is_shift
        self.out_indices = tuple(out_indices)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.pretrained = pretrained
        self.allow_partial = allow_partial
        if pretrained is not None:
            _check_pretrained_path(pretrained)  # fail at build time, not after data loading
        act_cfg = dict(act_cfg)
        block, stage_blocks = self.arch_settings[depth]

        half = base_channels // 2
        self.stem = nn.Sequential(
            ConvBNAct(in_channels, half, 3, 2, act_cfg),
            ConvBNAct(half, half, 3, 1, act_cfg),
            ConvBNAct(half, base_channels, 3, 1, act_cfg))
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        self.res_layers = []
        in_ch = base_channels
        for s, num_blocks in enumerate(stage_blocks):
            planes = base_channels * 2**s
            out_ch = planes * block.expansion
            blocks = []
            for i in range(num_blocks):
                stride = 2 if i == 0 and s > 0 else 1
                downsample = None
                if i == 0:
                    downsample = self._make_shortcut(block, in_ch, out_ch, stride)
                blocks.append(
                    block(in_ch, planes, stride, downsample, num_segments, is_shift,
                          shift_ratio, act_cfg, with_cp))
                in_ch = out_ch
            name = f'layer{s + 1}'
            self.add_module(name, nn.Sequential(*blocks))
            self.res_layers.append(name)
        self.feat_dim = in_ch

    @staticmethod
    def _make_shortcut(block, in_ch, out_ch, stride):
        """Paddle's first-block shortcut: avg-pool + 1x1 (bottleneck, stride 2), else 1x1."""
        if block is TweaksBottleneck and stride != 1:
            return nn.Sequential(
                nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False),
                nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch))
        return nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def init_weights(self):
        """Kaiming-normal (fan_in) convs and unit BatchNorms, as Paddle; then ``pretrained``."""
        super().init_weights()
        if self.pretrained:
            self._load_pretrained(self.pretrained)

    def _load_pretrained(self, path):
        _check_pretrained_path(path)
        ckpt = _load_checkpoint(path, map_location='cpu')
        state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else ckpt
        meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
        theirs = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        if not theirs:  # a bare backbone state dict
            theirs = dict(state)
        own = self.state_dict()
        common = [k for k in own if k in theirs]
        if not common:
            raise ValueError(
                f'ResNetTweaksTSM: no key of {path!r} (model.backbone.pretrained) matches '
                'this backbone; expected ovkit names such as "backbone.stem.0.conv.weight". '
                'Convert PaddleVideo files with tools/model_converters/pptsm_paddle.py.')
        problems = self._fit_problems(theirs, own, meta)
        if problems and not self.allow_partial:
            raise ValueError(
                f'ResNetTweaksTSM: {path!r} (model.backbone.pretrained) does not fit this '
                f'backbone (model.backbone.depth={self.depth}): {"; ".join(problems)}. Use the '
                'weights of this depth (docs/pptsm.md lists them), change model.backbone.depth, '
                'or set model.backbone.allow_partial=True to load only the tensors that fit.')
        picked = {k: theirs[k] for k in common if theirs[k].shape == own[k].shape}
        self.load_state_dict(picked, strict=False)
        logger = MMLogger.get_current_instance()
        print_log(f'ResNetTweaksTSM: loaded {len(picked)}/{len(own)} tensors from {path}',
                  logger=logger)
        if problems:
            print_log(f'ResNetTweaksTSM: allow_partial=True: {"; ".join(problems)}; the '
                      'tensors not loaded keep their initialisation', logger=logger, level=30)

    def _fit_problems(self, theirs, own, meta):
        """What keeps the backbone state dict ``theirs`` from loading strictly, as phrases."""
        problems = []
        depth = meta.get('depth') if isinstance(meta, dict) else None
        depth = depth or infer_depth(theirs)  # the converter records it; else from the keys
        if depth and depth != self.depth:
            problems.append(f'it holds a depth-{depth} backbone')
        missing = [k for k in own if k not in theirs and not k.endswith('num_batches_tracked')]
        extra = [k for k in theirs if k not in own]
        shaped = [k for k in own if k in theirs and theirs[k].shape != own[k].shape]
        if missing:
            problems.append(f'{len(missing)} of the {len(own)} tensors of this backbone are '
                            f'not in the file (e.g. {", ".join(missing[:3])})')
        if extra:
            problems.append(f'{len(extra)} of its tensors are not in this backbone (e.g. '
                            f'{", ".join(extra[:3])})')
        if shaped:
            k = shaped[0]
            problems.append(f'{len(shaped)} tensors have other shapes (e.g. {k}: '
                            f'{tuple(theirs[k].shape)} in the file, {tuple(own[k].shape)} here)')
        return problems

    def forward(self, x):
        """Frames ``[N*T, C, H, W]`` -> features of the stages in ``out_indices``."""
        x = self.maxpool(self.stem(x))
        outs = []
        for i, name in enumerate(self.res_layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _freeze_stages(self):
        if self.frozen_stages >= 0:
            self.stem.eval()
            for p in self.stem.parameters():
                p.requires_grad = False
        for i in range(1, self.frozen_stages + 1):
            layer = getattr(self, f'layer{i}')
            layer.eval()
            for p in layer.parameters():
                p.requires_grad = False

    def train(self, mode=True):
        """Train mode that keeps frozen stages (and, with ``norm_eval``, every BN) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


def _check_pretrained_path(path):
    """A clear error for a ``pretrained`` value that cannot be loaded (missing, Paddle file)."""
    if not isinstance(path, str):
        raise TypeError('ResNetTweaksTSM: model.backbone.pretrained must be a file path or '
                        f'None, got {type(path).__name__}.')
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'ResNetTweaksTSM: pretrained checkpoint {path!r} (model.backbone.pretrained) '
            'does not exist. Convert the PaddleVideo .pdparams file with '
            '`python tools/model_converters/pptsm_paddle.py IN.pdparams OUT.pth` '
            '(docs/pptsm.md says where the weights are published) and point the config at '
            'OUT.pth (PRETRAINED=OUT.pth in the environment, or --cfg-options '
            'model.backbone.pretrained=OUT.pth); to test a trained checkpoint or to train '
            'from scratch, pass --cfg-options model.backbone.pretrained=None.')
    if path.endswith(('.pdparams', '.pdopt')):
        raise ValueError(
            f'ResNetTweaksTSM: {path!r} (model.backbone.pretrained) is a Paddle file; '
            'convert it first with tools/model_converters/pptsm_paddle.py.')


_BLOCK_KEY = re.compile(r'^layer([1-4])\.(\d+)\.(conv\d)\.')


def infer_depth(state):
    """Depth of the ResNetTweaksTSM whose backbone state dict (no prefix) is ``state``, or None.

    Args:
        state: backbone parameter names (``layer3.5.conv1.weight``, ...) to tensors.
    """
    blocks, bottleneck = {}, False
    for key in state:
        m = _BLOCK_KEY.match(key)
        if m:
            stage, index = int(m.group(1)), int(m.group(2))
            blocks[stage] = max(blocks.get(stage, 0), index + 1)
            bottleneck = bottleneck or m.group(3) == 'conv3'
    counts = tuple(blocks.get(stage, 0) for stage in range(1, 5))
    for depth, (block, stages) in ResNetTweaksTSM.arch_settings.items():
        if stages == counts and (block is TweaksBottleneck) == bottleneck:
            return depth
    return None
