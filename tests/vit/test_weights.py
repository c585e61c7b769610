"""Weights from files: JAX .npz (orig, AugReg, big_vision) against timm's own npz loader,
mmpretrain checkpoints against mmpretrain's model, the converter CLI, clear errors."""
import numpy as np
import pytest
import torch
from mmengine.runner import load_checkpoint
from timm.models.vision_transformer import VisionTransformer

from ovkit.vit import WHERE_PUBLISHED, OVKitViT, WeightsError, load_backbone_weights
from ovkit.vit.convert import main as convert_main

from .common import logits, ovkit_classifier, perturb, single_thread, timm_fused

DIM, HEADS, DEPTH = 64, 4, 2
ARCH = dict(embed_dim=DIM, depth=DEPTH, num_heads=HEADS)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    with single_thread():
        yield


def to_jax_arrays(sd, layout='orig', scanned=False):
    """A timm state dict written with the real JAX key names and axis orders.

    Args:
        sd: timm state dict.
        layout: 'orig' (also AugReg), 'opt' (orig under opt/target/) or 'big_vision'.
        scanned: big_vision's stacked ``encoderblock`` arrays with a leading depth axis.
    """
    n = lambda t: t.detach().numpy().astype(np.float32)  # noqa: E731
    prefix = {'orig': '', 'opt': 'opt/target/', 'big_vision': 'params/'}[layout]
    bv = layout == 'big_vision'
    mha, mlp, ln2 = ('MultiHeadDotProductAttention_0', 'MlpBlock_0', 'LayerNorm_1') if bv else (
        'MultiHeadDotProductAttention_1', 'MlpBlock_3', 'LayerNorm_2')
    out = {
        'embedding/kernel': n(sd['patch_embed.proj.weight']).transpose(2, 3, 1, 0),
        'embedding/bias': n(sd['patch_embed.proj.bias']),
        'Transformer/encoder_norm/scale': n(sd['norm.weight']),
        'Transformer/encoder_norm/bias': n(sd['norm.bias']),
        'head/kernel': n(sd['head.weight']).T,
        'head/bias': n(sd['head.bias']),
    }
    if 'cls_token' in sd:
        out['cls'] = n(sd['cls_token'])
    out['pos_embedding' if bv else 'Transformer/posembed_input/pos_embedding'] = n(sd['pos_embed'])
    blocks = []
    for i in range(DEPTH):
        b = f'blocks.{i}.'
        qkv_w = n(sd[b + 'attn.qkv.weight']).reshape(3, HEADS, DIM // HEADS, DIM)
        qkv_b = n(sd[b + 'attn.qkv.bias']).reshape(3, HEADS, DIM // HEADS)
        blk = {
            'LayerNorm_0/scale': n(sd[b + 'norm1.weight']),
            'LayerNorm_0/bias': n(sd[b + 'norm1.bias']),
            f'{ln2}/scale': n(sd[b + 'norm2.weight']),
            f'{ln2}/bias': n(sd[b + 'norm2.bias']),
            f'{mha}/out/kernel': n(sd[b + 'attn.proj.weight']).T.reshape(HEADS, DIM // HEADS, DIM),
            f'{mha}/out/bias': n(sd[b + 'attn.proj.bias']),
        }
        for j, name in enumerate(('query', 'key', 'value')):
            blk[f'{mha}/{name}/kernel'] = qkv_w[j].transpose(2, 0, 1)  # [D, heads, hd]
            blk[f'{mha}/{name}/bias'] = qkv_b[j]
        for r in range(2):
            blk[f'{mlp}/Dense_{r}/kernel'] = n(sd[b + f'mlp.fc{r + 1}.weight']).T
            blk[f'{mlp}/Dense_{r}/bias'] = n(sd[b + f'mlp.fc{r + 1}.bias'])
        blocks.append(blk)
    if scanned:
        for k in blocks[0]:
            out[f'Transformer/encoderblock/{k}'] = np.stack([blk[k] for blk in blocks])
    else:
        for i, blk in enumerate(blocks):
            out.update({f'Transformer/encoderblock_{i}/{k}': v for k, v in blk.items()})
    return {prefix + k: v for k, v in out.items()}


def timm_vit(seed, **kw):
    args = dict(img_size=64, patch_size=16, embed_dim=DIM, depth=DEPTH, num_heads=HEADS,
                num_classes=6)
    args.update(kw)
    return timm_fused(perturb(VisionTransformer(**args), seed=seed), False)


def images(size=64):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('layout,scanned,timm_kw,ovkit_kw', [
    ('orig', False, {}, {}),
    ('opt', False, {}, {}),
    # big_vision 'gap' pooling: encoder_norm on the tokens, then the mean
    ('big_vision', False, dict(class_token=False, global_pool='avg', fc_norm=False),
     dict(class_token=False, global_pool='avg', fc_norm=False)),
    # big_vision 'tok': the table is added to patches only -> a zero class position here
    ('big_vision', True, dict(no_embed_class=True), {}),
])
def test_npz_matches_timm_loader(tmp_path, layout, scanned, timm_kw, ovkit_kw):
    src = timm_vit(1, **timm_kw)
    npz = tmp_path / 'vit.npz'
    np.savez(npz, **to_jax_arrays(src.state_dict(), layout, scanned))
    ref = timm_vit(2, **timm_kw)  # other weights, overwritten by timm's own JAX loader
    ref.load_pretrained(str(npz))
    dst = tmp_path / 'ovkit.pth'
    info = convert_main([str(npz), str(dst)])
    assert info['source_format'] == 'npz' and info['depth'] == DEPTH
    ours = ovkit_classifier(6, arch=ARCH, img_size=64, fused_attn=False, **ovkit_kw)
    load_checkpoint(ours, str(dst), strict=True)
    x = images()
    with torch.no_grad():
        expected = ref(x)
    assert (logits(ours, x) - expected).abs().max() < 1e-5


def test_npz_into_larger_image_resamples_like_timm(tmp_path):
    """JAX weights at 64 px into a 96 px backbone: bilinear resampling, as timm's npz loader."""
    npz = tmp_path / 'vit.npz'
    np.savez(npz, **to_jax_arrays(timm_vit(3).state_dict()))
    ref = timm_vit(4, img_size=96)
    ref.load_pretrained(str(npz))
    backbone = OVKitViT(arch=ARCH, img_size=96, fused_attn=False, out_type='raw').eval()
    assert load_backbone_weights(backbone, str(npz)) == 'npz'
    x = images(96)
    with torch.no_grad():
        assert (backbone(x)[0] - ref.forward_features(x)).abs().max() < 1e-5


def mmpretrain_classifier(distilled=False):
    import mmpretrain.models  # noqa: F401
    from mmpretrain.registry import MODELS
    arch = dict(embed_dims=DIM, num_layers=DEPTH, num_heads=HEADS, feedforward_channels=4 * DIM)
    head = 'DeiTClsHead' if distilled else 'VisionTransformerClsHead'
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(dict(
            type='ImageClassifier',
            backbone=dict(type='DistilledVisionTransformer' if distilled else 'VisionTransformer',
                          arch=arch, img_size=64, patch_size=16),
            head=dict(type=head, num_classes=6, in_channels=DIM,
                      hidden_dim=None if distilled else 48)))
    model.init_weights()
    return perturb(model, seed=5)


@pytest.mark.parametrize('distilled', [False, True])
def test_mmpretrain_checkpoint(tmp_path, distilled):
    ref = mmpretrain_classifier(distilled)
    src = tmp_path / 'mmpretrain.pth'
    torch.save({'state_dict': ref.state_dict(), 'meta': {}}, src)
    dst = tmp_path / 'ovkit.pth'
    info = convert_main([str(src), str(dst)])
    assert info['source_format'] == 'mmpretrain'
    kw = dict(distilled=True) if distilled else dict(representation_size=48)
    ours = ovkit_classifier(6, arch=ARCH, img_size=64, **kw)
    load_checkpoint(ours, str(dst), strict=True)
    x = images()
    with torch.no_grad():
        expected = ref(x, mode='tensor')
    assert (logits(ours, x) - expected).abs().max() < 1e-5


@pytest.mark.parametrize('suffix', ['.pth', '.safetensors'])
def test_timm_file_as_backbone_pretrained(tmp_path, suffix):
    """`model.backbone.pretrained` takes a timm file directly (fine-tuning: head dropped)."""
    src = timm_vit(6)
    path = tmp_path / f'timm{suffix}'
    if suffix == '.pth':
        torch.save(src.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    ours = ovkit_classifier(3, arch=ARCH, img_size=64, fused_attn=False, pretrained=str(path))
    x = images()
    with torch.no_grad():
        assert (ours.backbone(x)[0] - src.forward_head(src.forward_features(x),
                                                       pre_logits=True)).abs().max() < 1e-5
    assert ours.head.head.weight.shape == (3, DIM)  # new head for the new classes


def test_missing_file_names_key_and_source(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        ovkit_classifier(3, arch=ARCH, img_size=64, pretrained=str(tmp_path / 'nope.pth'))
    msg = str(e.value)
    assert 'model.backbone.pretrained' in msg and 'nope.pth' in msg
    assert WHERE_PUBLISHED in msg and 'huggingface.co/timm' in msg
    with pytest.raises(FileNotFoundError, match='SRC'):
        convert_main([str(tmp_path / 'missing.npz'), str(tmp_path / 'o.pth')])


def test_url_refused():
    with pytest.raises(WeightsError, match='local files only'):
        OVKitViT(arch=ARCH, img_size=64, pretrained='https://example.com/vit.pth').init_weights()


def test_wrong_architecture_explains(tmp_path):
    path = tmp_path / 'timm.pth'
    torch.save(timm_vit(7).state_dict(), path)
    backbone = OVKitViT(arch=dict(embed_dim=DIM, depth=3, num_heads=HEADS), img_size=64)
    with pytest.raises(WeightsError) as e:
        load_backbone_weights(backbone, str(path), key='model.backbone.pretrained')
    msg = str(e.value)
    assert 'missing blocks.2' in msg and "'depth': 2" in msg and 'timm.pth' in msg


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / 'junk.pth'
    path.write_bytes(b'not a pickle')
    with pytest.raises(WeightsError, match='junk.pth'):
        OVKitViT(arch=ARCH, img_size=64, pretrained=str(path)).init_weights()


def test_unknown_layout_names_the_file(tmp_path):
    path = tmp_path / 'resnet50.pth'
    torch.save({'conv1.weight': torch.zeros(2, 3, 1, 1), 'fc.bias': torch.zeros(2)}, path)
    with pytest.raises(WeightsError) as e:
        OVKitViT(arch=ARCH, img_size=64, pretrained=str(path)).init_weights()
    msg = str(e.value)
    assert f'model.backbone.pretrained = {str(path)!r}' in msg
    assert 'conv1.weight' in msg and 'blocks.0.' in msg and '--format' in msg
    # a forced format that is not the file's: the file is named too
    timm_file = tmp_path / 'timm.pth'
    torch.save(timm_vit(7).state_dict(), timm_file)
    for fmt in ('npz', 'ovkit'):
        with pytest.raises(WeightsError, match=f"SRC = {str(timm_file)!r}"):
            convert_main([str(timm_file), str(tmp_path / 'o.pth'), '--format', fmt])
