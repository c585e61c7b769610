"""Class names, prompt templates, class embeddings and tools/data/gen_class_embeddings.py."""

import numpy as np
import pytest
import torch

from ovkit.clip import build_class_embeddings, build_clip, load_class_names, load_prompt_templates
from ovkit.clip.prompts import format_prompt
from ovkit.metadata import metadata_path


@pytest.fixture(scope='module')
def clip():
    return build_clip(dict(model_name='tiny', seed=0))


def _tool():
    from ovkit.clip import gen_class_embeddings
    return gen_class_embeddings


def _ref_features(clip, texts, layer):
    """Per-prompt features via open_clip's modules over the full 77-token context (numpy out)."""
    m = clip.model
    tokens = clip.tokenize(texts)
    x = m.token_embedding(tokens) + m.positional_embedding
    blocks = m.transformer.resblocks
    for block in blocks[:len(blocks) if layer is None else layer]:
        x = block(x, attn_mask=m.attn_mask)
    if layer is None:
        x = m.ln_final(x) @ m.text_projection
    return x[torch.arange(len(texts)), tokens.argmax(-1)].detach().numpy().astype(np.float64)


def _ref_embeddings(clip, names, templates, layer):
    rows = []
    for name in names:
        feats = _ref_features(clip, [format_prompt(t, name) for t in templates], layer)
        feats /= np.linalg.norm(feats, axis=1, keepdims=True)
        mean = feats.mean(0)
        rows.append(mean / np.linalg.norm(mean))
    return np.stack(rows)


def test_shipped_class_lists():
    coco = load_class_names(metadata_path('coco_80.txt'))
    ov = load_class_names(metadata_path('coco_ov_65.txt'))
    base = load_class_names(metadata_path('coco_ov_48_base.txt'))
    novel = load_class_names(metadata_path('coco_ov_17_novel.txt'))
    assert len(coco) == 80 and coco[0] == 'person' and coco[-1] == 'toothbrush'
    assert (len(ov), len(base), len(novel)) == (65, 48, 17)
    assert not set(base) & set(novel) and set(base) | set(novel) == set(ov)
    assert ov == [c for c in coco if c in set(ov)]  # COCO order
    assert [ov.index(c) for c in novel] == [4, 5, 11, 12, 15, 16, 21, 23, 27, 29, 32, 34, 45,
                                             47, 54, 58, 63]
    templates = load_prompt_templates(metadata_path('prompt_templates.txt'))
    assert len(templates) >= 10 and all(t.count('{}') == 1 for t in templates)


def test_format_prompt():
    assert format_prompt('a photo of {article} {}.', 'apple') == 'a photo of an apple.'
    assert format_prompt('There is {article} {} in the scene.', 'Baseball_bat') == \
        'There is a baseball bat in the scene.'
    assert format_prompt('{}', 'cup/mug') == 'cup or mug'


def test_bad_files_are_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.txt'):
        load_class_names(str(tmp_path / 'nope.txt'))
    dup = tmp_path / 'dup.txt'
    dup.write_text('cat\ndog\ncat\n')
    with pytest.raises(ValueError, match=r"dup.txt' repeats \['cat'\]"):
        load_class_names(str(dup))
    bad = tmp_path / 'templates.txt'
    bad.write_text('a photo of a {}.\n# comment\na {} and a {}.\n')
    with pytest.raises(ValueError, match=r"templates.txt' template 2"):
        load_prompt_templates(str(bad))
    bad.write_text('a photo of {noun}.\n')
    with pytest.raises(ValueError, match='exactly one'):
        load_prompt_templates(str(bad))


@pytest.mark.parametrize('layer', [None, 1, 2])
def test_class_embeddings_match_independent_computation(clip, layer):
    names = ['cat', 'traffic light', 'apple']
    templates = ['a photo of {article} {}.', 'There is the {} in the scene.', 'itap of my {}.']
    ours = build_class_embeddings(clip, names, templates, layer=layer, batch_size=4)
    assert ours.shape == (3, 64) and ours.dtype == torch.float32 and not ours.requires_grad
    np.testing.assert_allclose(ours.numpy(), _ref_embeddings(clip, names, templates, layer),
                               atol=1e-5, rtol=0)
    # Same space as the region path: a prompt's words encoded as pseudo text score highest
    # against that prompt's own single-template embedding.
    single = build_class_embeddings(clip, names, templates[:1], layer=layer)
    tokens = clip.tokenize([format_prompt(templates[0], n) for n in names])
    words = [clip.token_embedding(t[1:int(t.argmax())]) for t in tokens]
    feats = torch.stack([clip.encode_pseudo_text(w[None], layer=layer)[0] for w in words])
    torch.testing.assert_close(feats, single, atol=1e-5, rtol=0)


def test_tool_writes_embeddings(clip, tmp_path):
    classes = tmp_path / 'classes.txt'
    classes.write_text('cat\ntraffic light\nteddy bear\n')
    out = tmp_path / 'sub' / 'emb_attn1.npy'
    feats = _tool().main(['--classes', str(classes), '--out', str(out), '--model-name', 'tiny',
                          '--layer', '1', '--clip-checkpoint', str(tmp_path / 'absent.pt')])
    saved = np.load(out)
    assert saved.shape == (3, 64) and saved.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(saved, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(saved, feats.numpy(), atol=0)
    templates = load_prompt_templates(metadata_path('prompt_templates.txt'))
    ref = build_class_embeddings(clip, ['cat', 'traffic light', 'teddy bear'], templates,
                                 layer=1)
    np.testing.assert_allclose(saved, ref.numpy(), atol=1e-6)
    # The projected output (no --layer) is a different space.
    _tool().main(['--classes', str(classes), '--out', str(tmp_path / 'emb.npy'),
                  '--model-name', 'tiny'])
    assert np.abs(np.load(tmp_path / 'emb.npy') - saved).max() > 1e-3


def test_tool_loads_checkpoint_and_explains_missing_one(clip, tmp_path):
    ckpt = tmp_path / 'tiny.pth'
    torch.save(clip.model.state_dict(), ckpt)
    classes = tmp_path / 'classes.txt'
    classes.write_text('cat\ndog\n')
    templates = tmp_path / 'templates.txt'
    templates.write_text('a photo of {article} {}.\n')
    feats = _tool().main(['--classes', str(classes), '--templates', str(templates), '--out',
                          str(tmp_path / 'a.npy'), '--model-name', 'tiny', '--seed', '9',
                          '--clip-checkpoint', str(ckpt)])
    torch.testing.assert_close(
        feats, build_class_embeddings(clip, ['cat', 'dog'], ['a photo of {article} {}.']))
    with pytest.raises(SystemExit) as err:
        _tool().main(['--classes', str(classes), '--out', str(tmp_path / 'b.npy'),
                      '--clip-checkpoint', str(tmp_path / 'ViT-B-32.pt')])
    assert '--clip-checkpoint' in str(err.value) and 'ViT-B-32.pt' in str(err.value)
    assert not (tmp_path / 'b.npy').exists()
