"""ResNetTweaksTSM: structure, shift placement, shapes per depth, freezing, pretrained loading."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmaction.registry import MODELS

from ovkit.pptsm import ResNetTweaksTSM
from ovkit.pptsm.shift import temporal_shift_reference


def leaky(x):
    return F.leaky_relu(x, 0.01)


def bn(m, x):
    return F.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)


def resnet_vd_params(depth):
    """Parameters of a ResNet-vd backbone, counted from the architecture (convs + BN affine)."""
    bottleneck = depth >= 50
    blocks = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
              152: (3, 8, 36, 3)}[depth]
    n = 3 * 32 * 9 + 32 * 32 * 9 + 32 * 64 * 9 + 2 * (32 + 32 + 64)  # the 3x3 stem
    c_in = 64
    for stage, count in enumerate(blocks):
        p = 64 * 2**stage
        c_out = 4 * p if bottleneck else p
        for i in range(count):
            if bottleneck:
                n += c_in * p + 9 * p * p + p * c_out + 2 * (p + p + c_out)
            else:
                n += 9 * c_in * p + 9 * p * p + 2 * (p + p)
            if i == 0:  # Paddle gives every stage's first block a 1x1 conv + BN shortcut
                n += c_in * c_out + 2 * c_out
            c_in = c_out
    return n


@pytest.mark.parametrize('depth', [18, 34, 50, 101, 152])
def test_parameter_count_for_each_depth(depth):
    with torch.device('meta'):  # no memory, no initialisation: R152 costs milliseconds
        model = ResNetTweaksTSM(depth=depth)
    n = sum(p.numel() for p in model.parameters())
    assert n == resnet_vd_params(depth)
    assert model.feat_dim == (512 if depth < 50 else 2048)
    if depth in (50, 101):  # PaddleVideo's R50 / R101 (design file)
        assert round(n / 1e6, 2) == {50: 23.53, 101: 42.52}[depth]


@pytest.mark.parametrize('depth', [18, 50])
def test_output_shapes(depth):
    model = ResNetTweaksTSM(depth=depth, num_segments=4, base_channels=16).eval()
    with torch.no_grad():
        out = model(torch.randn(8, 3, 64, 64))
    assert out.shape == (8, 128 if depth < 50 else 512, 2, 2)
    wide = ResNetTweaksTSM(depth=depth, num_segments=4, out_indices=(0, 1, 2, 3),
                           base_channels=16).eval()
    wide.load_state_dict(model.state_dict())
    with torch.no_grad():
        outs = wide(torch.randn(8, 3, 64, 64))
    e = 1 if depth < 50 else 4
    assert [o.shape[1:] for o in outs] == [(16 * e, 16, 16), (32 * e, 8, 8), (64 * e, 4, 4),
                                           (128 * e, 2, 2)]


def test_vd_stem_and_avgpool_shortcut_structure():
    with torch.device('meta'):  # structure only: no memory, no initialisation
        m, r101 = ResNetTweaksTSM(depth=50), ResNetTweaksTSM(depth=101)
    assert [c.conv.kernel_size for c in m.stem] == [(3, 3)] * 3
    assert [c.conv.out_channels for c in m.stem] == [32, 32, 64]
    assert m.stem[0].conv.stride == (2, 2)
    assert len(m.layer1[0].downsample) == 2  # stage 1: 1x1 conv + BN, no pooling
    ds = m.layer2[0].downsample
    assert isinstance(ds[0], nn.AvgPool2d) and ds[0].ceil_mode and ds[1].stride == (1, 1)
    assert m.layer2[0].conv2.stride == (2, 2) and m.layer2[0].conv1.stride == (1, 1)
    assert all(b.is_shift for layer in (m.layer1, m.layer3) for b in layer)  # every block
    assert sum(b.is_shift for b in r101.layer3) == 23  # mmaction2 shifts every 2nd only


def test_block_equals_paddle_block_written_out():
    """Shift feeds the branch only; the shortcut sees the unshifted input (Paddle's order)."""
    torch.manual_seed(0)
    m = ResNetTweaksTSM(depth=50, num_segments=4)
    for mod in m.modules():  # non-trivial BN statistics
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
    m.eval()
    blk = m.layer2[0]
    x = torch.randn(8, 256, 16, 16)
    s = temporal_shift_reference(x, 4)
    y = leaky(bn(blk.bn1, blk.conv1(s)))
    y = leaky(bn(blk.bn2, blk.conv2(y)))
    y = bn(blk.bn3, blk.conv3(y))
    short = bn(blk.downsample[2], blk.downsample[1](F.avg_pool2d(x, 2, 2, ceil_mode=True)))
    expected = leaky(short + y)
    with torch.no_grad():
        assert torch.allclose(blk(x), expected, atol=1e-5)


def test_shift_couples_frames_and_disabled_shift_does_not():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    perm = torch.tensor([3, 1, 2, 0, 4, 5, 6, 7])
    for is_shift, coupled in ((True, True), (False, False)):
        m = ResNetTweaksTSM(depth=18, num_segments=8, is_shift=is_shift,
                            base_channels=16).eval()
        with torch.no_grad():
            a, b = m(x), m(x[perm])
        # Without a shift every frame is processed alone: permuting frames permutes outputs.
        assert torch.allclose(a[perm], b, atol=1e-5) != coupled


def test_activation_is_configurable():
    m = ResNetTweaksTSM(depth=18, act_cfg=dict(type='ReLU', inplace=True))
    assert isinstance(m.layer1[0].act, nn.ReLU)
    assert isinstance(ResNetTweaksTSM(depth=18).layer1[0].act, nn.LeakyReLU)
    assert ResNetTweaksTSM(depth=18).layer1[0].act.negative_slope == 0.01


def test_norm_eval_and_frozen_stages():
    m = ResNetTweaksTSM(depth=18, frozen_stages=1, norm_eval=False, base_channels=16)
    m.train()
    assert not m.stem[0].bn.training and not m.layer1[0].bn1.training
    assert m.layer2[0].bn1.training
    assert all(not p.requires_grad for p in m.stem.parameters())
    assert all(not p.requires_grad for p in m.layer1.parameters())
    assert all(p.requires_grad for p in m.layer2.parameters())
    m2 = ResNetTweaksTSM(depth=18, norm_eval=True, base_channels=16).train()
    assert not any(mod.training for mod in m2.modules() if isinstance(mod, nn.BatchNorm2d))
    assert m2.layer1[0].conv1.weight.requires_grad
    # Running statistics stay put under norm_eval.
    before = m2.layer2[0].bn1.running_mean.clone()
    m2(torch.randn(8, 3, 32, 32))
    assert torch.equal(before, m2.layer2[0].bn1.running_mean)


def test_gradients_reach_every_trainable_parameter():
    m = ResNetTweaksTSM(depth=18, num_segments=4, frozen_stages=0, base_channels=16).train()
    m(torch.randn(8, 3, 32, 32)).mean().backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    a = ResNetTweaksTSM(depth=18, num_segments=4, base_channels=16).train()
    b = ResNetTweaksTSM(depth=18, num_segments=4, with_cp=True, base_channels=16).train()
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 3, 32, 32)
    a(x).sum().backward()
    b(x).sum().backward()
    assert torch.allclose(a.layer1[0].conv1.weight.grad, b.layer1[0].conv1.weight.grad,
                          rtol=1e-4, atol=1e-5)


def test_pretrained_loading_and_errors(tmp_path):
    src = ResNetTweaksTSM(depth=18)
    src.init_weights()
    state = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    state['cls_head.fc_cls.weight'] = torch.zeros(3, 512)
    torch.save({'state_dict': state}, tmp_path / 'ok.pth')
    dst = ResNetTweaksTSM(depth=18, pretrained=str(tmp_path / 'ok.pth'))
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k

    # A missing or Paddle file fails when the model is built, before any data is loaded.
    with pytest.raises(FileNotFoundError, match='model.backbone.pretrained'):
        ResNetTweaksTSM(depth=18, pretrained=str(tmp_path / 'nope.pth'))
    (tmp_path / 'x.pdparams').write_bytes(b'')
    with pytest.raises(ValueError, match='pptsm_paddle.py'):
        ResNetTweaksTSM(depth=18, pretrained=str(tmp_path / 'x.pdparams'))
    with pytest.raises(ValueError, match='depth=26'):
        ResNetTweaksTSM(depth=26)


def test_pretrained_of_another_depth_is_refused_unless_allow_partial(tmp_path):
    """ImageNet R50 weights in an R101 config share every R50 tensor: refuse, name the depth."""
    src = ResNetTweaksTSM(depth=50, base_channels=8)
    src.init_weights()
    path = str(tmp_path / 'r50.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in src.state_dict().items()}}, path)
    with pytest.raises(ValueError, match='model.backbone.depth=101.*depth-50 backbone') as err:
        ResNetTweaksTSM(depth=101, base_channels=8, pretrained=path).init_weights()
    assert 'allow_partial=True' in str(err.value) and 'layer3.6.' in str(err.value)
    torch.manual_seed(1)
    ref = ResNetTweaksTSM(depth=101, base_channels=8)
    ref.init_weights()
    torch.manual_seed(1)
    dst = ResNetTweaksTSM(depth=101, base_channels=8, pretrained=path, allow_partial=True)
    dst.init_weights()
    assert torch.equal(dst.layer3[5].conv1.weight, src.layer3[5].conv1.weight)  # loaded
    assert torch.equal(dst.layer3[6].conv1.weight, ref.layer3[6].conv1.weight)  # initialised
    # The deeper file into the shallower model: extra tensors, refused as well.
    deep = ResNetTweaksTSM(depth=101, base_channels=8)
    torch.save(deep.state_dict(), tmp_path / 'r101_bare.pth')
    with pytest.raises(ValueError, match='depth-101 backbone.*not in this backbone'):
        ResNetTweaksTSM(depth=50, base_channels=8,
                        pretrained=str(tmp_path / 'r101_bare.pth')).init_weights()
    # Another width: every key present, shapes differ.
    with pytest.raises(ValueError, match='other shapes'):
        ResNetTweaksTSM(depth=50, base_channels=16, pretrained=path).init_weights()
    # The converter's meta depth is believed even when the keys would fit.
    r18 = ResNetTweaksTSM(depth=18, base_channels=8)
    torch.save({'state_dict': r18.state_dict(), 'meta': {'depth': 34}}, tmp_path / 'meta.pth')
    with pytest.raises(ValueError, match='depth-34 backbone'):
        ResNetTweaksTSM(depth=18, base_channels=8,
                        pretrained=str(tmp_path / 'meta.pth')).init_weights()


def test_builds_from_the_registry():
    from mmengine.registry import DefaultScope

    import ovkit.pptsm  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmaction'):
        m = MODELS.build(dict(type='ResNetTweaksTSM', depth=18, num_segments=8))
    assert isinstance(m, ResNetTweaksTSM)
