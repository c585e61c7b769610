"""CLIPModel: pseudo-text encoding, layer-k outputs, image paths, freezing, checkpoints.

Reference values come from open_clip's own modules (nn.MultiheadAttention with the full 77-token
causal mask), never from the wrapper's code path.
"""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from ovkit.clip import TINY_CLIP_CFG, CLIPModel, build_clip, load_clip_state_dict

PROMPTS = ['a photo of a cat.', 'there is the traffic light in the scene.', 'dog']


@pytest.fixture(scope='module')
def clip():
    return build_clip(dict(model_name='tiny', seed=0))


def ref_text(clip, tokens, layer=None):
    """Text features through open_clip's blocks over the full 77-token context."""
    m = clip.model
    x = m.token_embedding(tokens) + m.positional_embedding
    blocks = m.transformer.resblocks
    for block in blocks[:len(blocks) if layer is None else layer]:
        x = block(x, attn_mask=m.attn_mask)
    end = tokens.argmax(-1)
    if layer is None:
        x = m.ln_final(x) @ m.text_projection
    return F.normalize(x[torch.arange(len(tokens)), end], dim=-1), x


def ref_pseudo(clip, words, layer=None):
    """One row of pseudo words laid out by hand in a 77-token context: [sot, words, eot, pad..]."""
    m = clip.model
    emb = m.token_embedding.weight
    pad = emb[0].expand(77 - words.shape[0] - 2, -1)
    x = torch.cat([emb[clip.sot_token_id][None], words, emb[clip.eot_token_id][None], pad])
    x = (x + m.positional_embedding)[None]
    blocks = m.transformer.resblocks
    for block in blocks[:len(blocks) if layer is None else layer]:
        x = block(x, attn_mask=m.attn_mask)
    if layer is None:
        x = m.ln_final(x) @ m.text_projection
    return F.normalize(x[0, words.shape[0] + 1], dim=-1), x[0]


def prompt_words(clip, text):
    tokens = clip.tokenize([text])
    end = int(tokens.argmax(-1))
    return clip.token_embedding(tokens[0, 1:end]), tokens


def test_tiny_spec_and_frozen(clip):
    assert isinstance(clip, CLIPModel)
    assert (clip.text_width, clip.embed_dim, clip.image_size) == (64, 64, 64)
    assert clip.token_embedding.weight.shape == (49408, 64)
    assert clip.context_length == 77 and clip.num_text_layers == 2
    assert len(clip.model.visual.transformer.resblocks) == 2
    assert clip.model.visual.conv1.kernel_size == (16, 16)
    assert [b.attn.num_heads for b in clip.model.transformer.resblocks] == [2, 2]
    assert len(clip.image_mean) == 3 and len(clip.image_std) == 3
    assert not any(p.requires_grad for p in clip.parameters())
    parent = torch.nn.Sequential(clip)
    parent.train()
    assert not any(m.training for m in clip.modules())
    # Same seed, same weights; another seed, other weights (the seed is honoured).
    again = build_clip(dict(model_name='tiny', seed=0))
    other = build_clip(dict(model_name='tiny', seed=1))
    w = clip.token_embedding.weight
    assert torch.equal(w, again.token_embedding.weight)
    assert not torch.equal(w, other.token_embedding.weight)


def test_tokenize(clip):
    tokens = clip.tokenize(PROMPTS)
    assert tokens.dtype == torch.long and tokens.shape == (3, 77)
    assert (tokens[:, 0] == clip.sot_token_id).all()
    assert (tokens.max(-1).values == clip.eot_token_id).all()


@pytest.mark.parametrize('layer', [None, 1, 2])
def test_encode_text_matches_open_clip(clip, layer):
    tokens = clip.tokenize(PROMPTS)
    ours = clip.encode_text(tokens, layer=layer)
    ref, _ = ref_text(clip, tokens, layer)
    assert ours.shape == (3, 64)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    if layer is None:  # and open_clip's public encode_text
        torch.testing.assert_close(ours, clip.model.encode_text(tokens, normalize=True),
                                   atol=1e-5, rtol=0)
    unnorm = clip.encode_text(tokens, layer=layer, normalize=False)
    torch.testing.assert_close(F.normalize(unnorm, dim=-1), ours, atol=1e-6, rtol=0)


def test_layer_k_differs_from_last_layer_output(clip):
    # layer=k has no ln_final/projection, so even k = num_layers is not the projected output.
    tokens = clip.tokenize(PROMPTS[:1])
    assert (clip.encode_text(tokens, layer=2) - clip.encode_text(tokens)).abs().max() > 1e-2


@pytest.mark.parametrize('layer', [None, 1, 2])
def test_pseudo_words_from_prompt_equal_encode_text(clip, layer):
    for text in PROMPTS:
        words, tokens = prompt_words(clip, text)
        pseudo = clip.encode_pseudo_text(words[None], layer=layer)
        torch.testing.assert_close(pseudo, clip.encode_text(tokens, layer=layer),
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(pseudo[0], ref_pseudo(clip, words, layer)[0],
                                   atol=1e-5, rtol=0)


def test_valid_mask_equals_packed_words(clip):
    torch.manual_seed(0)
    words = torch.randn(4, 6, 64) * 0.02
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 1, 1],
                         [0, 1, 0, 1, 0, 0]], dtype=torch.bool)
    for layer in (None, 1):
        out = clip.encode_pseudo_text(words, mask, layer=layer)
        for i in range(4):
            packed = words[i][mask[i]]
            alone = clip.encode_pseudo_text(packed[None], layer=layer)[0]
            torch.testing.assert_close(out[i], alone, atol=1e-5, rtol=0)
            torch.testing.assert_close(out[i], ref_pseudo(clip, packed, layer)[0],
                                       atol=1e-5, rtol=0)
        # Dropped words have no influence at all.
        noisy = torch.where(mask[..., None], words, torch.randn_like(words) * 100)
        torch.testing.assert_close(clip.encode_pseudo_text(noisy, mask, layer=layer), out,
                                   atol=1e-6, rtol=0)
    # A 0/1 float mask means the same as a bool mask.
    torch.testing.assert_close(clip.encode_pseudo_text(words, mask.float()),
                               clip.encode_pseudo_text(words, mask))


def test_context_is_longest_kept_plus_two(clip):
    seen = []
    hook = clip.model.transformer.resblocks[0].ln_1.register_forward_pre_hook(
        lambda mod, args: seen.append(tuple(args[0].shape)))
    try:
        words = torch.randn(3, 6, 64) * 0.02
        clip.encode_pseudo_text(words)
        mask = torch.zeros(3, 6, dtype=torch.bool)
        mask[0, :3] = mask[1, 4] = mask[2, 1:3] = True
        clip.encode_pseudo_text(words, mask)
        clip.encode_text(clip.tokenize(['a photo of a cat.']))  # sot + 6 tokens + eot
    finally:
        hook.remove()
    assert seen == [(3, 8, 64), (3, 5, 64), (1, 8, 64)]


def test_padding_after_end_token_changes_nothing(clip):
    torch.manual_seed(1)
    short = torch.randn(1, 2, 64) * 0.02
    long = torch.randn(1, 9, 64) * 0.02
    batch = torch.cat([torch.cat([short, torch.zeros(1, 7, 64)], 1), long])
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :2] = True
    mask[1] = True
    for layer in (None, 2):
        out = clip.encode_pseudo_text(batch, mask, layer=layer)  # short row padded to 11
        alone = clip.encode_pseudo_text(short, layer=layer)  # context 4
        torch.testing.assert_close(out[0], alone[0], atol=1e-5, rtol=0)
        # 77-token context with id-0 padding (open_clip modules) agrees too.
        torch.testing.assert_close(alone[0], ref_pseudo(clip, short[0], layer)[0],
                                   atol=1e-5, rtol=0)


def test_length_buckets_split_only_when_padding_is_costly():
    from ovkit.clip.model import _length_buckets
    same = _length_buckets(torch.tensor([3, 1, 2]))  # few rows: one pass
    assert [g.tolist() for g in same] == [[0, 1, 2]]
    kept = torch.tensor([1] * 30 + [30] * 10 + [12] * 20)[torch.randperm(60)]
    groups = _length_buckets(kept)
    assert len(groups) == 3  # lengths 3, 14 and 32 each run at their own context
    assert sorted(torch.cat(groups).tolist()) == list(range(60))  # every row exactly once
    assert all(len(set(kept[g].tolist())) == 1 for g in groups)


def test_length_buckets_match_rows_encoded_alone(clip):
    """Rows of very different lengths run in separate passes; each row's features, word tokens
    and gradients equal those of the row encoded alone (the one-pass result)."""
    torch.manual_seed(4)
    num_words = 30
    words = (torch.randn(40, num_words, 64) * 0.02).requires_grad_()
    mask = torch.zeros(40, num_words, dtype=torch.bool)
    mask[:30, 0] = True  # 30 one-word rows ...
    mask[30:] = torch.rand(10, num_words) < 0.9  # ... and 10 long ones
    mask[30:, 0] = True
    seen = []
    hook = clip.model.transformer.resblocks[0].ln_1.register_forward_pre_hook(
        lambda mod, args: seen.append(tuple(args[0].shape[:2])))
    target = torch.randn(40, num_words, 64)
    try:
        for mode in ('causal', 'maskclip'):
            seen.clear()
            words.grad = None
            feat, tokens = clip.encode_pseudo_text(words, mask, layer=None,
                                                   return_word_tokens=True, word_token_mode=mode)
            assert sorted(seen) == [(10, int(mask[30:].sum(1).max()) + 2), (30, 3)]
            ((feat.sum(1, keepdim=True) * target[:, 0]).sum() + (tokens * target).sum()).backward()
            grad = words.grad.clone()
            for i in (0, 29, 30, 39):
                words.grad = None
                f1, t1 = clip.encode_pseudo_text(words[i:i + 1], mask[i:i + 1], layer=None,
                                                 return_word_tokens=True, word_token_mode=mode)
                torch.testing.assert_close(f1[0], feat[i], atol=1e-5, rtol=0)
                torch.testing.assert_close(t1[0], tokens[i], atol=1e-5, rtol=0)
                ((f1.sum(1, keepdim=True) * target[i:i + 1, 0]).sum()
                 + (t1 * target[i:i + 1]).sum()).backward()
                scale = float(grad[i].abs().max())
                torch.testing.assert_close(words.grad[i], grad[i], atol=1e-4 * scale, rtol=0)
    finally:
        hook.remove()


def test_return_word_tokens(clip):
    torch.manual_seed(2)
    words = torch.randn(2, 4, 64) * 0.02
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    for layer, dim in ((None, 64), (1, 64)):
        feat, tokens = clip.encode_pseudo_text(words, mask, layer=layer,
                                               return_word_tokens=True)
        assert feat.shape == (2, dim) and tokens.shape == (2, 4, dim)
        assert (tokens[0, 1] == 0).all()
        _, ref = ref_pseudo(clip, words[0][mask[0]], layer)  # positions 1..3 hold the words
        torch.testing.assert_close(tokens[0, [0, 2, 3]], ref[1:4], atol=1e-5, rtol=0)
        _, ref = ref_pseudo(clip, words[1], layer)
        torch.testing.assert_close(tokens[1], ref[1:5], atol=1e-5, rtol=0)


def test_gradients_reach_words_not_clip(clip):
    words = (torch.randn(3, 5, 64) * 0.02).requires_grad_()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, 2:] = False
    target = F.normalize(torch.randn(3, 64), dim=-1)
    for layer in (None, 1):
        words.grad = None
        loss = (clip.encode_pseudo_text(words, mask, layer=layer) * target).sum()
        loss.backward()
        assert words.grad is not None and torch.isfinite(words.grad).all()
        assert words.grad[mask].abs().sum(-1).gt(0).all()  # every kept word gets gradient
        assert (words.grad[~mask] == 0).all()  # dropped words get none
    assert all(p.grad is None for p in clip.parameters())


def test_bf16_autocast_close_to_fp32(clip):
    torch.manual_seed(3)
    words = torch.randn(4, 6, 64) * 0.02
    mask = torch.rand(4, 6) > 0.3
    mask[:, 0] = True
    tokens = clip.tokenize(PROMPTS)
    images = torch.randn(2, 3, 64, 64)

    def run(bf16_words):
        return [clip.encode_pseudo_text(bf16_words, mask),
                clip.encode_pseudo_text(words, mask, layer=1),
                clip.encode_text(tokens), clip.encode_image(images),
                clip.encode_image_dense(images)]

    fp32 = run(words)
    dtypes = []
    hooks = [b.mlp.c_fc.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
             for b in (clip.model.transformer.resblocks[0],
                       clip.model.visual.transformer.resblocks[0])]
    try:
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = run(words.bfloat16())  # a bf16 head output is accepted as well
    finally:
        for h in hooks:
            h.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # the blocks really ran in bf16
    for a, b in zip(fp32, low):
        assert b.shape == a.shape and torch.isfinite(b).all()
        cos = F.cosine_similarity(a.flatten(1), b.float().flatten(1), dim=-1)
        assert cos.min() > 0.99, cos


def test_empty_inputs(clip):
    assert clip.encode_pseudo_text(torch.zeros(0, 6, 64)).shape == (0, 64)
    feat, tok = clip.encode_pseudo_text(torch.zeros(0, 6, 64), layer=1, return_word_tokens=True)
    assert feat.shape == (0, 64) and tok.shape == (0, 6, 64)
    assert clip.encode_text(torch.zeros(0, 77, dtype=torch.long)).shape == (0, 64)
    assert clip.encode_image(torch.zeros(0, 3, 64, 64)).shape == (0, 64)
    assert clip.encode_image_dense(torch.zeros(0, 3, 64, 64)).shape == (0, 64, 4, 4)


def test_encode_image_matches_open_clip(clip):
    torch.manual_seed(4)
    images = torch.randn(2, 3, 64, 64)
    ours = clip.encode_image(images)
    torch.testing.assert_close(ours, F.normalize(clip.model.visual(images), dim=-1),
                               atol=1e-5, rtol=0)
    dense = clip.encode_image_dense(images)
    assert dense.shape == (2, 64, 4, 4)
    visual = clip.model.visual
    visual.output_tokens = True
    try:
        _, tokens = visual(images)  # ln_post'ed patch tokens, row-major grid
    finally:
        visual.output_tokens = False
    ref = (tokens @ visual.proj).transpose(1, 2).reshape(2, 64, 4, 4)
    torch.testing.assert_close(dense, ref, atol=1e-5, rtol=0)


def test_dense_features_for_other_sizes(clip):
    images = torch.randn(1, 3, 96, 128)
    assert clip.encode_image_dense(images).shape == (1, 64, 6, 8)
    assert clip.encode_image(images).shape == (1, 64)
    # At the native grid the interpolated positional embedding is the original one.
    assert torch.equal(clip._visual_pos_embed(4, 4), clip.model.visual.positional_embedding)


def test_bad_inputs_are_explained(clip):
    with pytest.raises(ValueError, match=r'layer=3.*\[1, 2\]'):
        clip.encode_text(clip.tokenize(['x']), layer=3)
    with pytest.raises(ValueError, match=r'layer=0'):
        clip.encode_pseudo_text(torch.zeros(1, 2, 64), layer=0)
    with pytest.raises(ValueError, match=r'\[N, W, 64\]'):
        clip.encode_pseudo_text(torch.zeros(1, 2, 32))
    with pytest.raises(ValueError, match='valid_mask'):
        clip.encode_pseudo_text(torch.zeros(2, 3, 64), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match='context length 77'):
        clip.encode_pseudo_text(torch.zeros(1, 76, 64))
    with pytest.raises(ValueError, match=r'\[N, 3, H, W\]'):
        clip.encode_image(torch.zeros(1, 64, 64))


# --------------------------------------------------------------------------- building / loading
def test_build_clip_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['chekpoint'\]"):
        build_clip(dict(model_name='tiny', chekpoint='x.pt'))
    with pytest.raises(ValueError, match='clip_cfg.model_name is required'):
        build_clip(dict(checkpoint='x.pt'))
    with pytest.raises(ValueError, match=r"clip_cfg.checkpoint is required.*ViT-B-32\.pt"):
        build_clip(dict(model_name='ViT-B-32'))
    missing = tmp_path / 'ckpt' / 'ViT-B-32.pt'
    with pytest.raises(FileNotFoundError) as err:
        build_clip(dict(model_name='ViT-B-32', checkpoint=str(missing)), cfg_key='model.clip_cfg')
    msg = str(err.value)
    assert 'model.clip_cfg.checkpoint' in msg and str(missing) in msg
    assert 'openaipublic' in msg and 'ViT-B-32.pt' in msg and 'never fetches' in msg
    with pytest.raises(ValueError, match="not an open_clip architecture"):
        torch.save({}, tmp_path / 'empty.pt')
        build_clip(dict(model_name='ViT-X-99', checkpoint=str(tmp_path / 'empty.pt')))


def _outputs(clip):
    torch.manual_seed(5)
    return (clip.encode_text(clip.tokenize(PROMPTS)), clip.encode_image(torch.randn(1, 3, 64, 64)),
            clip.encode_pseudo_text(torch.randn(2, 3, 64) * 0.02, layer=1))


def test_state_dict_round_trip(clip, tmp_path):
    expected = _outputs(clip)
    fresh = build_clip(dict(model_name='tiny', seed=7))
    assert (fresh.encode_text(clip.tokenize(PROMPTS)) - expected[0]).abs().max() > 1e-3
    files = {
        'wrapper.pth': clip.state_dict(),  # keys 'model.*'
        'open_clip.pth': clip.model.state_dict(),  # open_clip layout
        'ddp.pth': {'state_dict': {f'module.{k}': v for k, v in clip.model.state_dict().items()}},
    }
    for name, obj in files.items():
        torch.save(obj, tmp_path / name)
        loaded = build_clip(dict(model_name='tiny', seed=7, checkpoint=str(tmp_path / name)))
        for a, b in zip(_outputs(loaded), expected):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert not any(p.requires_grad for p in loaded.parameters())


def _openai_like(clip):
    """A copy of the tiny model as OpenAI ships CLIP: fp16 weights plus meta entries."""
    from open_clip.model import CLIP, convert_weights_to_lp
    model = CLIP(**TINY_CLIP_CFG, quick_gelu=True)
    model.load_state_dict(clip.model.state_dict())
    for key, value in dict(input_resolution=64, context_length=77, vocab_size=49408).items():
        if hasattr(model, key):
            delattr(model, key)
        model.register_buffer(key, torch.tensor(value))
    convert_weights_to_lp(model)
    return model.eval()


def _check_openai_load(clip, path):
    state_dict, is_openai = load_clip_state_dict(path)
    assert is_openai
    assert state_dict['text_projection'].dtype == torch.float16
    # quick_gelu=False in the config would be wrong for OpenAI weights; auto-detect picks it.
    loaded = build_clip(dict(model_name='tiny', seed=3, checkpoint=path, quick_gelu=None))
    assert type(loaded.model.transformer.resblocks[0].mlp.gelu).__name__ == 'QuickGELU'
    assert loaded.model.text_projection.dtype == torch.float32
    # Reference: the same fp16-rounded weights in a plain fp32 open_clip model.
    rounded = {k: v.float() for k, v in clip.model.state_dict().items()}
    for k, v in state_dict.items():
        if k in rounded:
            rounded[k] = v.float()
    torch.testing.assert_close(loaded.model.state_dict(), rounded, atol=0, rtol=0)
    tokens = clip.tokenize(PROMPTS)
    ref = clip.model.__class__(**TINY_CLIP_CFG, quick_gelu=True)
    ref.load_state_dict(rounded)
    torch.testing.assert_close(loaded.encode_text(tokens), ref.encode_text(tokens, normalize=True),
                               atol=1e-5, rtol=0)
    # fp16 rounding only: still close to the fp32 original.
    cos = F.cosine_similarity(loaded.encode_text(tokens), clip.encode_text(tokens), dim=-1)
    assert cos.min() > 0.999


@pytest.mark.filterwarnings('ignore::FutureWarning', 'ignore::torch.jit.TracerWarning')
def test_openai_torchscript_archive_loads(clip, tmp_path):
    model = _openai_like(clip)
    traced = torch.jit.trace_module(
        model, dict(encode_image=(torch.zeros(1, 3, 64, 64, dtype=torch.float16),)),
        check_trace=False)
    path = str(tmp_path / 'ViT-tiny.pt')
    torch.jit.save(traced, path)
    assert 'attn_mask' in torch.jit.load(path).state_dict()  # traced extras must be dropped
    _check_openai_load(clip, path)


def test_openai_state_dict_loads(clip, tmp_path):
    path = str(tmp_path / 'openai_state_dict.pt')
    torch.save(_openai_like(clip).state_dict(), path)
    _check_openai_load(clip, path)


def test_architecture_mismatch_is_explained(clip, tmp_path):
    state = clip.model.state_dict()
    state['text_projection'] = torch.zeros(64, 32)
    state['extra.weight'] = torch.zeros(1)
    del state['ln_final.bias']
    path = str(tmp_path / 'bad.pt')
    torch.save(state, path)
    with pytest.raises(ValueError) as err:
        build_clip(dict(model_name='tiny', checkpoint=path))
    msg = str(err.value)
    assert "clip_cfg.model_name='tiny'" in msg and osp.basename(path) in msg
    assert 'ln_final.bias' in msg and 'extra.weight' in msg
    assert 'text_projection: file (64, 32) vs model (64, 64)' in msg


# ------------------------------------------------------------------ MaskCLIP-style tokens
def _diagonal_mask(length):
    """Each token attends only to itself: the attention output is out_proj(v(token))."""
    mask = torch.full((length, length), float('-inf'))
    mask.fill_diagonal_(0.0)
    return mask


def _maskclip_last_block(block, x, anchor):
    """The reference's last-block tokens through open_clip's own nn.MultiheadAttention:
    anchor + attention-with-only-itself, then the block's MLP residual."""
    y = block.ln_1(x)
    attn = block.attention(y, attn_mask=_diagonal_mask(x.shape[1]))
    tokens = anchor[:, None] + attn
    return tokens + block.mlp(block.ln_2(tokens))


@pytest.mark.parametrize('layer', [None, 1])
def test_maskclip_word_tokens_match_diagonal_attention(clip, layer):
    torch.manual_seed(5)
    words = torch.randn(2, 4, 64) * 0.02
    mask = torch.tensor([[1, 0, 1, 1], [1, 1, 1, 1]], dtype=torch.bool)
    feat, tokens = clip.encode_pseudo_text(words, mask, layer=layer, return_word_tokens=True,
                                           word_token_mode='maskclip')
    plain_feat, plain = clip.encode_pseudo_text(words, mask, layer=layer,
                                                return_word_tokens=True)
    torch.testing.assert_close(feat, plain_feat)  # the sentence feature is unchanged
    m = clip.model
    blocks = m.transformer.resblocks[:len(m.transformer.resblocks) if layer is None else layer]
    for row in range(2):
        kept = words[row][mask[row]]
        emb = m.token_embedding.weight
        x = torch.cat([emb[clip.sot_token_id][None], kept, emb[clip.eot_token_id][None]])
        x = (x + m.positional_embedding[:x.shape[0]])[None]
        for block in blocks[:-1]:
            x = block(x, attn_mask=m.attn_mask[:x.shape[1], :x.shape[1]])
        end = kept.shape[0] + 1
        ref = _maskclip_last_block(blocks[-1], x, x[:, end])[0, 1:end]
        if layer is None:
            ref = m.ln_final(ref) @ m.text_projection
        torch.testing.assert_close(tokens[row][mask[row]], ref, atol=1e-5, rtol=0)
        assert (tokens[row][~mask[row]] == 0).all()
    assert (tokens - plain).abs().max() > 1e-3  # a different feature than the causal outputs
    with pytest.raises(ValueError, match='word_token_mode'):
        clip.encode_pseudo_text(words, mask, return_word_tokens=True, word_token_mode='x')


def test_maskclip_dense_matches_diagonal_attention(clip):
    torch.manual_seed(6)
    images = torch.randn(2, 3, 64, 64)
    dense = clip.encode_image_dense(images, mode='maskclip')
    visual = clip.model.visual
    x = visual.conv1(images).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.view(1, 1, -1).expand(2, 1, -1)
    x = visual.ln_pre(torch.cat([cls, x], 1) + visual.positional_embedding)
    for block in visual.transformer.resblocks[:-1]:
        x = block(x)
    ref = _maskclip_last_block(visual.transformer.resblocks[-1], x[:, 1:], x[:, 0])
    ref = (visual.ln_post(ref) @ visual.proj).transpose(1, 2).reshape(2, 64, 4, 4)
    torch.testing.assert_close(dense, ref, atol=1e-5, rtol=0)
    assert (dense - clip.encode_image_dense(images)).abs().max() > 1e-3
    # one pass gives the global and the dense features, equal to the separate calls
    for mode in ('plain', 'maskclip'):
        feat, both = clip.encode_image(images, dense_mode=mode)
        torch.testing.assert_close(feat, clip.encode_image(images))
        torch.testing.assert_close(both, clip.encode_image_dense(images, mode=mode))
    with pytest.raises(ValueError, match='dense mode'):
        clip.encode_image_dense(images, mode='x')
    empty = clip.encode_image(torch.zeros(0, 3, 64, 64), dense_mode='maskclip')
    assert empty[0].shape == (0, 64) and empty[1].shape == (0, 64, 4, 4)
