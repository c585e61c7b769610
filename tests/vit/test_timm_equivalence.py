"""timm weights -> ovkit give timm's logits: every family at reduced depth, B/16 at full size,
average pooling, DeiT distillation, the in21k representation layer, pos-embed resampling."""
import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed as timm_resample
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from ovkit.vit import resample_abs_pos_embed, timm_to_ovkit

from .common import FAMILIES, logits, ovkit_classifier, perturb, single_thread, timm_fused

TOL = 1e-5


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    with single_thread():
        yield


def images(n=2, size=224, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def load_into_ovkit(timm_model, num_classes, **backbone):
    model = ovkit_classifier(num_classes, init=False, **backbone)
    # timm names as they are: only the module prefix (backbone./head.) is added
    missing, unexpected = model.load_state_dict(timm_to_ovkit(timm_model.state_dict()),
                                                strict=True)
    assert not missing and not unexpected
    return model


def assert_close(a, b, tol=TOL):
    err = (a - b).abs().max().item()
    assert err <= tol, f'max abs difference {err:.3g} > {tol}'
    return err


@pytest.mark.parametrize('family,fused', [(f, False) for f in sorted(FAMILIES)] + [('B/16', True)])
def test_family_reduced_depth(family, fused):
    """Explicit softmax on both sides for every family; SDPA on both sides once."""
    patch, dim, heads = FAMILIES[family]
    ref = perturb(VisionTransformer(img_size=224, patch_size=patch, embed_dim=dim, depth=2,
                                    num_heads=heads, num_classes=7), seed=1)
    ours = load_into_ovkit(ref, 7, arch=dict(embed_dim=dim, depth=2, num_heads=heads),
                           patch_size=patch, fused_attn=fused)
    timm_fused(ref, fused)
    x = images(2)
    with torch.no_grad():
        expected = ref(x)
    assert_close(logits(ours, x), expected)
    assert len(ours.state_dict()) == len(ref.state_dict())


@pytest.mark.parametrize('name,arch,patch', [
    ('vit_tiny_patch16_224', 'tiny', 16), ('vit_small_patch16_224', 'small', 16),
    ('vit_base_patch16_224', 'base', 16), ('vit_base_patch32_224', 'base', 32),
    ('vit_large_patch16_224', 'large', 16), ('vit_large_patch32_224', 'large', 32),
    ('vit_huge_patch14_224', 'huge', 14)])
def test_full_size_state_dicts_match_timm(name, arch, patch):
    """Every variant at full size: the same keys and shapes as timm's (meta tensors: no memory)."""
    from ovkit.vit import OVKitViT
    with torch.device('meta'):
        ref = timm.create_model(name, pretrained=False, num_classes=1000)
        ours = OVKitViT(arch=arch, patch_size=patch)
    expected = {k: v.shape for k, v in ref.state_dict().items() if not k.startswith('head.')}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected


@pytest.mark.e2e
def test_base16_full_size():
    """The whole ViT-B/16 (152 tensors, 86.6M parameters) loads as is and matches."""
    ref = perturb(timm.create_model('vit_base_patch16_224', pretrained=False), seed=2)
    timm_fused(ref, False)
    ours = load_into_ovkit(ref, 1000, arch='base', fused_attn=False)
    assert len(ref.state_dict()) == 152
    assert sum(p.numel() for p in ours.parameters()) == 86_567_656
    x = images(1)
    with torch.no_grad():
        expected = ref(x)
    assert_close(logits(ours, x), expected)


def test_avg_pool_uses_fc_norm():
    ref = perturb(VisionTransformer(img_size=64, patch_size=16, embed_dim=192, depth=2,
                                    num_heads=3, num_classes=5, global_pool='avg'), seed=3)
    assert 'fc_norm.weight' in ref.state_dict() and 'norm.weight' not in ref.state_dict()
    timm_fused(ref, False)
    ours = load_into_ovkit(ref, 5, arch=dict(embed_dim=192, depth=2, num_heads=3), img_size=64,
                           global_pool='avg', fused_attn=False)
    x = images(3, 64)
    with torch.no_grad():
        expected = ref(x)
    assert_close(logits(ours, x), expected)
    # written out: mean of the patch tokens (class token excluded), then fc_norm, then head
    with torch.no_grad():
        b = ours.backbone
        manual = ours.head.head(b.fc_norm(b.forward_features(x)[:, 1:].mean(1)))
    assert_close(manual, expected)


@pytest.mark.parametrize('opt', [
    dict(qkv_bias=False), dict(class_token=False, global_pool='avg'), dict(final_norm=False),
    dict(fc_norm=True), dict(global_pool='avg', fc_norm=False), dict(mlp_ratio=2.),
    dict(in_chans=1), dict(img_size=(32, 48))], ids=str)
def test_options_shared_with_timm(opt):
    """Constructor options timm's VisionTransformer has too: same names, same logits."""
    ref = perturb(VisionTransformer(**dict(dict(img_size=32, patch_size=8, embed_dim=64, depth=2,
                                                num_heads=4, num_classes=3), **opt)), seed=11)
    timm_fused(ref, False)
    ours = load_into_ovkit(ref, 3, **dict(dict(arch=dict(embed_dim=64, depth=2, num_heads=4),
                                               img_size=32, patch_size=8, fused_attn=False),
                                          **opt))
    size = opt.get('img_size', (32, 32))
    x = torch.randn(2, opt.get('in_chans', 3), *size)
    with torch.no_grad():
        expected = ref(x)
    assert_close(logits(ours, x), expected)


@pytest.mark.parametrize('fused', [False, True])
def test_deit_distilled(fused):
    ref = perturb(VisionTransformerDistilled(img_size=224, patch_size=16, embed_dim=192, depth=2,
                                             num_heads=3, num_classes=9), seed=4)
    timm_fused(ref, fused)
    assert {'dist_token', 'head_dist.weight'} <= set(ref.state_dict())
    ours = load_into_ovkit(ref, 9, arch=dict(embed_dim=192, depth=2, num_heads=3),
                           distilled=True, fused_attn=fused)
    x = images(2)
    with torch.no_grad():
        expected = ref(x)  # eval: (head(cls) + head_dist(dist)) / 2
    assert_close(logits(ours, x), expected)
    # training mode gives the same average (timm's default distilled_training=False)
    ours.train()
    ref.train()
    with torch.no_grad():
        assert_close(ours(x, mode='tensor'), ref(x))


def test_in21k_representation_layer():
    """timm 1.x dropped pre_logits; the reference is timm's pooled feature -> fc -> tanh -> head."""
    ref = perturb(VisionTransformer(img_size=64, patch_size=16, embed_dim=192, depth=2,
                                    num_heads=3, num_classes=11), seed=5)
    timm_fused(ref, False)
    fc = perturb(torch.nn.Linear(192, 96), seed=6)
    head = perturb(torch.nn.Linear(96, 11), seed=7)
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith('head.')}
    sd.update({'pre_logits.fc.weight': fc.weight, 'pre_logits.fc.bias': fc.bias,
               'head.weight': head.weight, 'head.bias': head.bias})
    ours = ovkit_classifier(11, arch=dict(embed_dim=192, depth=2, num_heads=3), img_size=64,
                            representation_size=96, fused_attn=False)
    ours.load_state_dict(timm_to_ovkit(sd), strict=True)
    x = images(2, 64)
    with torch.no_grad():
        expected = head(torch.tanh(fc(ref.forward_head(ref.forward_features(x), pre_logits=True))))
    assert_close(logits(ours, x), expected)


def test_pos_embed_resampling_224_to_384():
    pos = torch.randn(1, 197, 64, generator=torch.Generator().manual_seed(8))
    ours = resample_abs_pos_embed(pos, (24, 24), num_prefix_tokens=1)
    theirs = timm_resample(pos, new_size=(24, 24), num_prefix_tokens=1)
    assert ours.shape == (1, 577, 64)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours[:, :1], pos[:, :1])  # the class position is not interpolated
    # the JAX-loader variant (bilinear, no antialias) and distilled (two prefix tokens)
    pos2 = torch.randn(1, 198, 64)
    assert torch.equal(
        resample_abs_pos_embed(pos2, (24, 24), num_prefix_tokens=2, interpolation='bilinear',
                               antialias=False),
        timm_resample(pos2, (24, 24), num_prefix_tokens=2, interpolation='bilinear',
                      antialias=False))


def test_224_weights_run_at_384_like_timm():
    """A 224 checkpoint loaded into a 384 model: the same logits as timm's checkpoint filter."""
    src = perturb(VisionTransformer(img_size=224, patch_size=32, embed_dim=192, depth=2,
                                    num_heads=3, num_classes=4), seed=9)
    ref = VisionTransformer(img_size=384, patch_size=32, embed_dim=192, depth=2, num_heads=3,
                            num_classes=4)
    ref.load_state_dict(checkpoint_filter_fn(src.state_dict(), ref))
    timm_fused(ref.eval(), False)
    ours = ovkit_classifier(4, arch=dict(embed_dim=192, depth=2, num_heads=3), img_size=384,
                            patch_size=32, fused_attn=False)
    ours.load_state_dict(timm_to_ovkit(src.state_dict()))  # resampled by the backbone's hook
    assert ours.backbone.pos_embed.shape == (1, 145, 192)
    x = images(2, 384)
    with torch.no_grad():
        expected = ref(x)
    assert_close(logits(ours, x), expected)


def test_dynamic_img_size_matches_timm():
    ref = perturb(VisionTransformer(img_size=64, patch_size=16, embed_dim=192, depth=2,
                                    num_heads=3, num_classes=4, dynamic_img_size=True), seed=10)
    timm_fused(ref, False)
    ours = load_into_ovkit(ref, 4, arch=dict(embed_dim=192, depth=2, num_heads=3), img_size=64,
                           dynamic_img_size=True, fused_attn=False)
    x = images(2, 96)
    with torch.no_grad():
        expected = ref(x)
    assert_close(logits(ours, x), expected)
