"""OVKitViT on its own: output types, gradients, drop path, errors, training, mmaction2 use."""
import pytest
import torch

from ovkit.vit import OVKitViT, vit_flops

from .common import single_thread

TINY = dict(embed_dim=32, depth=3, num_heads=2)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    with single_thread():
        yield


def images(n=2, size=32):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_state_dict_names_are_timms():
    keys = set(OVKitViT(arch='tiny').state_dict())
    assert {'cls_token', 'pos_embed', 'patch_embed.proj.weight', 'blocks.0.norm1.weight',
            'blocks.0.attn.qkv.weight', 'blocks.0.attn.proj.bias', 'blocks.0.mlp.fc1.weight',
            'blocks.11.mlp.fc2.bias', 'norm.weight'} <= keys
    assert not any('fc_norm' in k or 'dist_token' in k for k in keys)
    assert all(m.eps == 1e-6 for m in OVKitViT(arch='tiny').modules()
               if isinstance(m, torch.nn.LayerNorm))


@pytest.mark.parametrize('arch,patch,width,tokens', [
    ('base', 16, 768, 197), ('huge', 14, 1280, 257), ('large', 32, 1024, 50)])
def test_variant_sizes(arch, patch, width, tokens):
    with torch.device('meta'):  # shapes only: no memory, no time
        m = OVKitViT(arch=arch, patch_size=patch if arch == 'large' else None)
    assert m.pos_embed.shape == (1, tokens, width)
    assert m.patch_embed.proj.weight.shape[-1] == patch


def test_out_types_shapes():
    x = images()
    shapes = {'pre_logits': (2, 32), 'cls_token': (2, 32), 'avg_featmap': (2, 32),
              'featmap': (2, 32, 4, 4), 'raw': (2, 17, 32)}
    for out_type, shape in shapes.items():
        m = OVKitViT(arch=TINY, img_size=32, patch_size=8, out_type=out_type).eval()
        m.init_weights()
        outs = m(x)
        assert isinstance(outs, tuple) and len(outs) == 1 and outs[0].shape == shape
    m = OVKitViT(arch=TINY, img_size=32, patch_size=8, out_type='featmap', out_indices=(0, -1))
    assert [o.shape for o in m(x)] == [(2, 32, 4, 4)] * 2


def test_out_types_agree_with_each_other():
    """featmap/raw/cls_token/avg_featmap are views of the same tokens."""
    torch.manual_seed(0)
    kw = dict(arch=TINY, img_size=32, patch_size=8)
    raw = OVKitViT(out_type='raw', **kw).eval()
    raw.init_weights()
    sd = raw.state_dict()
    x = images()
    tokens = raw(x)[0]
    for out_type, expect in [('cls_token', tokens[:, 0]),
                             ('featmap', tokens[:, 1:].transpose(1, 2).reshape(2, 32, 4, 4))]:
        m = OVKitViT(out_type=out_type, **kw).eval()
        m.load_state_dict(sd)
        assert torch.allclose(m(x)[0], expect, atol=1e-6)


def test_gradients_reach_every_parameter():
    m = OVKitViT(arch=TINY, img_size=32, patch_size=8, distilled=True, drop_path_rate=.1)
    m.init_weights()
    cls, dist = m(images())[0]
    (cls.square().sum() + dist.sum()).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_drop_path_rates_and_train_eval():
    m = OVKitViT(arch=TINY, img_size=32, patch_size=8, drop_path_rate=.3)
    m.init_weights()
    rates = [getattr(b.drop_path1, 'drop_prob', 0.) for b in m.blocks]
    assert rates == pytest.approx([0., .15, .3])
    x = images()
    m.train()
    torch.manual_seed(1)
    a = m(x)[0]
    b = m(x)[0]
    assert not torch.allclose(a, b)  # stochastic depth drops different samples
    m.eval()
    assert torch.equal(m(x)[0], m(x)[0])


def test_gradient_checkpointing_same_gradients():
    torch.manual_seed(0)
    a = OVKitViT(arch=TINY, img_size=32, patch_size=8)
    a.init_weights()
    b = OVKitViT(arch=TINY, img_size=32, patch_size=8, with_cp=True)
    b.load_state_dict(a.state_dict())
    x = images()
    a(x)[0].sum().backward()
    b(x)[0].sum().backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-6), n


def test_fused_and_explicit_attention_agree():
    m = OVKitViT(arch=TINY, img_size=32, patch_size=8).eval()
    m.init_weights()
    x = images()
    fused = m(x)[0]
    m.fused_attn = False
    assert not m.blocks[0].attn.fused_attn
    assert torch.allclose(fused, m(x)[0], atol=1e-5)


def test_wrong_input_size_is_explained():
    m = OVKitViT(arch=TINY, img_size=32, patch_size=8)
    with pytest.raises(ValueError, match='dynamic_img_size'):
        m(images(size=48))


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='giant'), 'arch'),
    (dict(global_pool='max'), 'global_pool'),
    (dict(class_token=False), 'class_token'),
    (dict(distilled=True, global_pool='avg'), 'distilled'),
    (dict(out_type='tokens'), 'out_type'),
    (dict(img_size=30, patch_size=8), 'multiple'),
])
def test_bad_arguments(kwargs, match):
    args = dict(arch=TINY, img_size=32, patch_size=8)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        OVKitViT(**args)


# Every constructor option of OVKitViT (its docstring's Args) with a value other than the
# default; test_every_option_is_covered keeps this list complete when an option is added.
OPTIONS = [
    dict(arch='tiny'),
    dict(img_size=(32, 48)),
    dict(patch_size=16),
    dict(in_chans=1),
    dict(global_pool='avg'),
    dict(global_pool='avg', class_token=False),
    dict(distilled=True),
    dict(representation_size=24),
    dict(mlp_ratio=2.),
    dict(qkv_bias=False),
    dict(qkv_bias=False, fused_attn=False, attn_drop_rate=.1),
    dict(drop_rate=.1, pos_drop_rate=.1, attn_drop_rate=.1),
    dict(drop_path_rate=.2),
    dict(norm_eps=1e-5),
    dict(final_norm=False),
    dict(fc_norm=True),
    dict(global_pool='avg', fc_norm=False),
    dict(fused_attn=False),
    dict(dynamic_img_size=True),
    *[dict(out_type=t) for t in ('pre_logits', 'cls_token', 'avg_featmap', 'featmap', 'raw')],
    dict(out_indices=(0, -1), out_type='featmap'),
    dict(with_cp=True),
    dict(pretrained='FILE'),  # replaced by a weights file written in the test
    dict(init_cfg=dict(type='Constant', layer='LayerNorm', val=2.)),
]


def test_every_option_is_covered():
    import inspect
    params = set(inspect.signature(OVKitViT).parameters)
    assert params == {k for opt in OPTIONS for k in opt}


@pytest.mark.parametrize('opt', OPTIONS, ids=lambda o: ','.join(f'{k}={v}' for k, v in o.items()))
def test_every_option_builds_inits_and_trains(opt, tmp_path):
    kw = dict(arch=TINY, img_size=32, patch_size=8)
    kw.update(opt)
    if kw.get('pretrained') == 'FILE':
        src = OVKitViT(**dict(kw, pretrained=None))
        src.init_weights()
        torch.save(src.state_dict(), tmp_path / 'w.pth')
        kw['pretrained'] = str(tmp_path / 'w.pth')
    torch.manual_seed(0)
    m = OVKitViT(**kw)
    m.init_weights()
    assert m.pos_embed.std() > .01  # timm's trunc_normal(.02) ran
    if kw.get('pretrained'):
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(),
                                                     src.state_dict().values()))
    if 'init_cfg' in opt:
        assert torch.all(m.blocks[0].norm1.weight == 2.)
    if opt.get('qkv_bias') is False:
        assert m.blocks[0].attn.qkv.bias is None
    h, w = kw['img_size'] if isinstance(kw['img_size'], tuple) else (32, 32)
    if kw.get('dynamic_img_size'):
        h, w = 48, 40  # another size than img_size
    x = torch.randn(2, kw.get('in_chans', 3), h, w)
    outs = m.train()(x)
    assert len(outs) == len(kw.get('out_indices', [-1]))
    flat = [t for o in outs for t in (o if isinstance(o, tuple) else (o, ))]
    assert all(torch.isfinite(t).all() for t in flat)
    sum(t.square().mean() for t in flat).backward()
    assert m.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    m.eval()
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(
            [t for o in m(x) for t in (o if isinstance(o, tuple) else (o, ))],
            [t for o in m(x) for t in (o if isinstance(o, tuple) else (o, ))]))


def test_layer_depth_for_layer_decay():
    m = OVKitViT(arch=TINY, img_size=32, patch_size=8)
    assert m.get_layer_depth('backbone.pos_embed', 'backbone.') == (0, 5)
    assert m.get_layer_depth('backbone.blocks.2.attn.qkv.weight', 'backbone.') == (3, 5)
    assert m.get_layer_depth('head.head.weight', 'backbone.') == (4, 5)


def test_flops_formula_counts_the_matmuls():
    """Written-out count for ViT-B/16 at 224: 17.56 GMACs (the figure timm/fvcore report)."""
    with torch.device('meta'):
        m = OVKitViT(arch='base')
    assert vit_flops(m, num_classes=1000) / 2 / 1e9 == pytest.approx(17.56, abs=0.01)


def test_classifier_learns_a_separable_task():
    """A tiny ViT classifier (mmpretrain ImageClassifier) fits two colour classes."""
    from .common import ovkit_classifier
    torch.manual_seed(0)
    model = ovkit_classifier(2, arch=TINY, img_size=32, patch_size=8).train()
    from mmpretrain.structures import DataSample
    x = torch.rand(16, 3, 32, 32)
    y = torch.arange(16) % 2
    x[y == 1, 0] += 1  # class 1 is redder
    samples = [DataSample().set_gt_label(int(v)) for v in y]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(x, samples, mode='loss')['loss']
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]


def test_frame_backbone_in_mmaction2_recognizer():
    """`backbone=dict(type='mmpretrain.OVKitViT')` inside an mmaction2 Recognizer2D config.

    ovkit is imported (top of this module) before mmaction: ovkit.compat fixes its wheel.
    """
    from mmaction.registry import MODELS as ACTION_MODELS
    from mmaction.structures import ActionDataSample
    from mmengine.registry import DefaultScope
    cfg = dict(
        type='Recognizer2D',
        backbone=dict(type='mmpretrain.OVKitViT', arch=TINY, img_size=32, patch_size=8,
                      drop_path_rate=.1),
        cls_head=dict(type='TSNHead', num_classes=5, in_channels=32, spatial_type=None,
                      consensus=dict(type='AvgConsensus', dim=1), average_clips='prob'),
        data_preprocessor=dict(type='ActionDataPreprocessor', mean=[127.5] * 3,
                               std=[127.5] * 3, format_shape='NCHW'))
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = ACTION_MODELS.build(cfg)
    model.init_weights()
    assert type(model.backbone).__name__ == 'OVKitViT' and model.backbone_from == 'mmpretrain'
    clips = torch.randn(2, 4, 3, 32, 32)  # [N, segments, C, H, W]
    samples = [ActionDataSample().set_gt_label(torch.tensor([i])) for i in (1, 3)]
    losses = model(clips, samples, mode='loss')
    assert torch.isfinite(losses['loss_cls'])
    losses['loss_cls'].backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad is not None
    model.eval()
    with torch.no_grad():
        preds = model(clips, [ActionDataSample() for _ in range(2)], mode='predict')
    assert preds[0].pred_score.shape == (5, ) and torch.isclose(preds[0].pred_score.sum(),
                                                                 torch.tensor(1.))
