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


@pytest.mark.parametrize('depth,params_m', [(18, None), (34, None), (50, 23.53), (101, 42.52),
                                            (152, None)])
def test_output_shapes_for_each_depth(depth, params_m):
    model = ResNetTweaksTSM(depth=depth, num_segments=4)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(8, 3, 32, 32))
    channels = 512 if depth < 50 else 2048
    assert out.shape == (8, channels, 1, 1)
    if params_m is not None:
        n = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(n - params_m) < 0.01, n


def test_vd_stem_and_avgpool_shortcut_structure():
    m = ResNetTweaksTSM(depth=50)
    assert [c.conv.kernel_size for c in m.stem] == [(3, 3)] * 3
    assert [c.conv.out_channels for c in m.stem] == [32, 32, 64]
    assert m.stem[0].conv.stride == (2, 2)
    assert len(m.layer1[0].downsample) == 2  # stage 1: 1x1 conv + BN, no pooling
    ds = m.layer2[0].downsample
    assert isinstance(ds[0], nn.AvgPool2d) and ds[0].ceil_mode and ds[1].stride == (1, 1)
    assert m.layer2[0].conv2.stride == (2, 2) and m.layer2[0].conv1.stride == (1, 1)
    assert all(b.is_shift for layer in (m.layer1, m.layer3) for b in layer)  # every block
    r101 = ResNetTweaksTSM(depth=101)
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
        m = ResNetTweaksTSM(depth=18, num_segments=8, is_shift=is_shift).eval()
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
    m = ResNetTweaksTSM(depth=18, frozen_stages=1, norm_eval=False)
    m.train()
    assert not m.stem[0].bn.training and not m.layer1[0].bn1.training
    assert m.layer2[0].bn1.training
    assert all(not p.requires_grad for p in m.stem.parameters())
    assert all(not p.requires_grad for p in m.layer1.parameters())
    assert all(p.requires_grad for p in m.layer2.parameters())
    m2 = ResNetTweaksTSM(depth=18, norm_eval=True).train()
    assert not any(mod.training for mod in m2.modules() if isinstance(mod, nn.BatchNorm2d))
    assert m2.layer1[0].conv1.weight.requires_grad
    # Running statistics stay put under norm_eval.
    before = m2.layer2[0].bn1.running_mean.clone()
    m2(torch.randn(8, 3, 32, 32))
    assert torch.equal(before, m2.layer2[0].bn1.running_mean)


def test_gradients_reach_every_trainable_parameter():
    m = ResNetTweaksTSM(depth=18, num_segments=4, frozen_stages=0).train()
    m(torch.randn(8, 3, 32, 32)).mean().backward()
    for name, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name


def test_with_cp_gives_the_same_gradients():
    torch.manual_seed(0)
    a = ResNetTweaksTSM(depth=18, num_segments=4).train()
    b = ResNetTweaksTSM(depth=18, num_segments=4, with_cp=True).train()
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

    with pytest.raises(FileNotFoundError, match='model.backbone.pretrained'):
        ResNetTweaksTSM(depth=18, pretrained=str(tmp_path / 'nope.pth')).init_weights()
    (tmp_path / 'x.pdparams').write_bytes(b'')
    with pytest.raises(ValueError, match='pptsm_paddle.py'):
        ResNetTweaksTSM(depth=18, pretrained=str(tmp_path / 'x.pdparams')).init_weights()
    with pytest.raises(ValueError, match='model.backbone.depth'):
        ResNetTweaksTSM(depth=50, pretrained=str(tmp_path / 'ok.pth')).init_weights()
    with pytest.raises(ValueError, match='depth=26'):
        ResNetTweaksTSM(depth=26)


def test_builds_from_the_registry():
    from mmengine.registry import DefaultScope

    import ovkit.pptsm  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmaction'):
        m = MODELS.build(dict(type='ResNetTweaksTSM', depth=18, num_segments=8))
    assert isinstance(m, ResNetTweaksTSM)
