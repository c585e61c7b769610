"""Read ViT weights from local files and express them with timm's parameter names.

Formats (detected from the file): timm state dicts (``.pth``/``.bin``/``.safetensors``),
Google's JAX ``.npz`` (original ``Transformer/encoderblock_i`` layout, AugReg with or without
``opt/target/``, big_vision ``params/`` layout, stacked/scanned blocks), mmpretrain ViT/DeiT
checkpoints and ovkit checkpoints (``backbone.*`` + ``head.head.*``). Nothing is downloaded:
a missing file raises an error that names the config key and where the weights are published.
Written by hand: timm's JAX loader copies into a timm model, mmpretrain ships no converter.
"""
import os.path as osp
import re
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from .pos_embed import resample_abs_pos_embed

WHERE_PUBLISHED = (
    'ViT weights are published as: timm state dicts on the Hugging Face Hub '
    '(https://huggingface.co/timm, e.g. timm/vit_base_patch16_224.augreg2_in21k_ft_in1k, file '
    'model.safetensors); Google JAX .npz files in the gs://vit_models bucket listed in '
    'https://github.com/google-research/vision_transformer; mmpretrain checkpoints linked from '
    'mmpretrain configs/vision_transformer/README.md and configs/deit/README.md. Download one '
    'yourself (ovkit never downloads) and point the config key at the local file.')

HEAD_KEYS = ('head.', 'head_dist.')


class WeightsError(ValueError):
    """A weights file that cannot be used, with the file and the fix in the message."""


def _missing(path: str, key: str) -> FileNotFoundError:
    # a path that names a timm tag (vit_base_patch16_224.augreg2_in21k_ft_in1k) gets its page
    tag = re.search(r'((?:vit|deit)\w*\.\w+?)(?:\.(?:safetensors|pth|bin)|/|$)', path)
    page = (f' This one: https://huggingface.co/timm/{tag.group(1)} (model.safetensors).'
            if tag else '')
    return FileNotFoundError(f'ViT weights not found: {key} = {path!r}.{page} {WHERE_PUBLISHED} '
                             'Other formats: convert with tools/model_converters/vit.py.')


# --------------------------------------------------------------------------- reading
def read_file(path: str, key: str = 'checkpoint'):
    """Load a weights file as a flat dict of tensors (``.npz``: numpy arrays).

    Args:
        path: local file.
        key: the config key or option that named the file (for error messages).
    """
    if not isinstance(path, str) or '://' in path:
        raise WeightsError(f'{key} = {path!r}: ovkit loads local files only. {WHERE_PUBLISHED}')
    if not osp.isfile(path):
        raise _missing(path, key)
    if path.endswith('.npz'):
        with np.load(path) as npz:
            return {k: npz[k] for k in npz.files}
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise WeightsError(f'{key} = {path!r} is a .safetensors file; install the '
                               'safetensors package (pip install safetensors)') from e
        return load_file(path, device='cpu')
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:  # pickle errors name no file; say which one and what to do
        raise WeightsError(f'{key} = {path!r} could not be read as a torch checkpoint '
                           f'({type(e).__name__}: {e}). Expected a timm/mmpretrain/ovkit '
                           '.pth, a .safetensors or a JAX .npz file.') from e
    if isinstance(obj, dict):
        for wrapper in ('state_dict', 'model', 'model_ema', 'module'):
            if isinstance(obj.get(wrapper), dict) and obj[wrapper]:
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f'{key} = {path!r} holds no state dict of tensors '
                           f'(got {type(obj).__name__})')
    if all(k.startswith('module.') for k in obj):  # saved from DataParallel/DDP
        obj = {k[len('module.'):]: v for k, v in obj.items()}
    return obj


def _where(path: str, key: str) -> str:
    return f'{key} = {path!r}' if path else 'the weights'


def detect_format(weights: dict, path: str = '', key: str = 'checkpoint') -> str:
    """'npz', 'mmpretrain', 'ovkit' or 'timm' from the keys of ``read_file``'s result.

    Args:
        weights: flat dict from :func:`read_file`.
        path: the file they came from (error messages).
        key: the config key or option that named the file (error messages).
    """
    keys = list(weights)
    if any(k.endswith('embedding/kernel') for k in keys):
        return 'npz'
    if any(k.startswith(('backbone.layers.', 'layers.0.')) for k in keys):
        return 'mmpretrain'
    if any(k.startswith('backbone.blocks.') for k in keys):
        return 'ovkit'
    if any(k.startswith('blocks.0.') for k in keys):
        return 'timm'
    raise WeightsError(
        f'{_where(path, key)}: not a ViT weights layout ovkit knows; first keys: '
        + (', '.join(keys[:6]) or 'none') + '. Expected timm keys (blocks.0.*), a JAX .npz '
        '(embedding/kernel), an mmpretrain ViT (layers.0.* / backbone.layers.*) or an ovkit '
        'checkpoint (backbone.blocks.*); force one with --format if the detection is wrong.')


# --------------------------------------------------------------------------- JAX .npz
def _jax_prefix(w: dict, path: str = '') -> str:
    for prefix in ('opt/target/', 'params/img/', 'params/', ''):
        if f'{prefix}embedding/kernel' in w:
            return prefix
    raise WeightsError(f'{path or "the .npz"}: no embedding/kernel array, so not a JAX ViT '
                       'checkpoint')


def npz_to_timm(w: dict, num_prefix_tokens: Optional[int] = None,
                path: str = '') -> Dict[str, torch.Tensor]:
    """Google JAX ViT arrays -> timm-named tensors (timm's ``_load_weights`` mapping).

    Dense kernels ``[in, out]`` are transposed; attention q/k/v kernels ``[D, heads, hd]``
    become rows of ``qkv.weight``; the patch kernel ``[p, p, 3, D]`` becomes ``[D, 3, p, p]``.
    big_vision files (``params/``, ``MultiHeadDotProductAttention_0``, ``LayerNorm_1``,
    ``pos_embedding`` without a class position) get a zero class position, which is what
    adding the table before prepending the class token means.

    Args:
        w: arrays from ``np.load``.
        num_prefix_tokens: class/dist tokens in the position table; None infers it.
        path: the file (error messages).
    """
    p = _jax_prefix(w, path)
    big_vision = p.startswith('params/') or f'{p}pos_embedding' in w
    scanned = f'{p}Transformer/encoderblock/LayerNorm_0/scale' in w
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).float()  # noqa: E731
    out = {}
    out['patch_embed.proj.weight'] = t(w[f'{p}embedding/kernel'].transpose(3, 2, 0, 1))
    out['patch_embed.proj.bias'] = t(w[f'{p}embedding/bias'])
    has_cls = f'{p}cls' in w
    if has_cls:
        out['cls_token'] = t(w[f'{p}cls']).reshape(1, 1, -1)
    pos_key = 'pos_embedding' if big_vision else 'Transformer/posembed_input/pos_embedding'
    pos = t(w[p + pos_key])
    pos = pos.reshape(1, -1, pos.shape[-1])
    side = int(round(pos.shape[1]**0.5))
    if has_cls and side * side == pos.shape[1]:
        # big_vision adds the table to the patches only, then prepends the class token
        pos = torch.cat([pos.new_zeros(1, 1, pos.shape[-1]), pos], dim=1)
    out['pos_embed'] = pos
    out['norm.weight'] = t(w[f'{p}Transformer/encoder_norm/scale'])
    out['norm.bias'] = t(w[f'{p}Transformer/encoder_norm/bias'])
    if f'{p}head/kernel' in w:
        out['head.weight'] = t(w[f'{p}head/kernel'].T)
        out['head.bias'] = t(w[f'{p}head/bias'])
    if f'{p}pre_logits/kernel' in w:
        out['pre_logits.fc.weight'] = t(w[f'{p}pre_logits/kernel'].T)
        out['pre_logits.fc.bias'] = t(w[f'{p}pre_logits/bias'])

    mha, mlp, ln2 = (0, 0, 1) if big_vision else (1, 3, 2)
    if scanned:
        depth = w[f'{p}Transformer/encoderblock/LayerNorm_0/scale'].shape[0]
    else:
        depth = len({m.group(1) for k in w for m in [re.search(r'encoderblock_(\d+)/', k)] if m})
    for i in range(depth):
        bp = f'{p}Transformer/encoderblock/' if scanned else f'{p}Transformer/encoderblock_{i}/'
        get = (lambda name: w[bp + name][i]) if scanned else (lambda name: w[bp + name])
        a = f'MultiHeadDotProductAttention_{mha}/'
        o = f'blocks.{i}.'
        out[o + 'norm1.weight'] = t(get('LayerNorm_0/scale'))
        out[o + 'norm1.bias'] = t(get('LayerNorm_0/bias'))
        out[o + 'attn.qkv.weight'] = torch.cat(
            [t(get(f'{a}{n}/kernel')).flatten(1).T for n in ('query', 'key', 'value')])
        out[o + 'attn.qkv.bias'] = torch.cat(
            [t(get(f'{a}{n}/bias')).reshape(-1) for n in ('query', 'key', 'value')])
        out[o + 'attn.proj.weight'] = t(get(f'{a}out/kernel')).flatten(0, 1).T
        out[o + 'attn.proj.bias'] = t(get(f'{a}out/bias'))
        out[o + 'norm2.weight'] = t(get(f'LayerNorm_{ln2}/scale'))
        out[o + 'norm2.bias'] = t(get(f'LayerNorm_{ln2}/bias'))
        for r in range(2):
            out[o + f'mlp.fc{r + 1}.weight'] = t(get(f'MlpBlock_{mlp}/Dense_{r}/kernel')).T
            out[o + f'mlp.fc{r + 1}.bias'] = t(get(f'MlpBlock_{mlp}/Dense_{r}/bias'))
    return {k: v.contiguous() for k, v in out.items()}


def npz_num_heads(w: dict, path: str = '') -> int:
    """Attention heads of a JAX ViT (the middle axis of the query kernel).

    Args:
        w: arrays from ``np.load``.
        path: the file (error messages).
    """
    p = _jax_prefix(w, path)
    for k, v in w.items():
        if k.startswith(p) and re.search(r'MultiHeadDotProductAttention_\d/query/kernel$', k):
            return int(v.shape[-2])
    raise WeightsError(f'{path or "the .npz"}: no attention query kernel')


# --------------------------------------------------------------------------- mmpretrain
_MMPRETRAIN_RULES = [
    (r'^patch_embed\.projection\.', 'patch_embed.proj.'),
    (r'^layers\.(\d+)\.ln1\.', r'blocks.\1.norm1.'),
    (r'^layers\.(\d+)\.ln2\.', r'blocks.\1.norm2.'),
    (r'^layers\.(\d+)\.attn\.qkv\.', r'blocks.\1.attn.qkv.'),
    (r'^layers\.(\d+)\.attn\.proj\.', r'blocks.\1.attn.proj.'),
    (r'^layers\.(\d+)\.ffn\.layers\.0\.0\.', r'blocks.\1.mlp.fc1.'),
    (r'^layers\.(\d+)\.ffn\.layers\.1\.', r'blocks.\1.mlp.fc2.'),
    (r'^ln1\.', 'norm.'),
    (r'^ln2\.', 'fc_norm.'),
    (r'^(cls_token|dist_token|pos_embed)$', r'\1'),
]


def mmpretrain_to_timm(sd: dict, path: str = '') -> Dict[str, torch.Tensor]:
    """mmpretrain ``VisionTransformer``/``DistilledVisionTransformer`` (+ ViT/DeiT head) keys
    -> timm keys.

    Args:
        sd: state dict (with or without the ``backbone.``/``head.`` prefixes).
        path: file name for error messages.
    """
    out = {}
    if 'backbone.ln1.weight' in sd and 'backbone.ln2.weight' in sd or (
            'ln1.weight' in sd and 'ln2.weight' in sd):
        raise WeightsError(f'{path}: mmpretrain ViT with out_type="avg_featmap" and '
                           'final_norm=True normalises twice (ln1 on tokens, ln2 after pooling); '
                           'timm and OVKitViT have one of the two. Only final_norm=False '
                           'avg_featmap checkpoints (MAE/BEiT fine-tunes) or cls_token ones map.')
    for k, v in sd.items():
        if k.startswith('data_preprocessor.'):
            continue
        if k.startswith('head.layers.'):
            name = k[len('head.layers.'):]
            name = re.sub(r'^pre_logits\.', 'pre_logits.fc.', name)
            if not name.startswith(('head.', 'head_dist.', 'pre_logits.fc.')):
                raise WeightsError(f'{path}: no timm equivalent for mmpretrain key {k!r}')
            out[name] = v
            continue
        name = k[len('backbone.'):] if k.startswith('backbone.') else k
        for pattern, repl in _MMPRETRAIN_RULES:
            new, n = re.subn(pattern, repl, name)
            if n:
                out[new] = v
                break
        else:
            raise WeightsError(f'{path}: no timm equivalent for mmpretrain key {k!r} (layer '
                               'scale, pre_norm and other variants are not supported)')
    return out


# --------------------------------------------------------------------------- ovkit
def ovkit_to_timm(sd: dict) -> Dict[str, torch.Tensor]:
    """ovkit classifier keys (``backbone.X``, ``head.head.X``) -> timm keys.

    Args:
        sd: state dict of an ImageClassifier built with OVKitViT + OVKitViTClsHead.
    """
    out = {}
    for k, v in sd.items():
        if k.startswith('backbone.'):
            out[k[len('backbone.'):]] = v
        elif k.startswith(('head.head.', 'head.head_dist.')):
            out[k[len('head.'):]] = v
    return out


def timm_to_ovkit(sd: dict) -> Dict[str, torch.Tensor]:
    """timm keys -> ovkit classifier keys: ``head*`` under ``head.``, the rest under
    ``backbone.`` (no renaming, the point of OVKitViT).

    Args:
        sd: timm-named state dict.
    """
    return {('head.' if k.startswith(HEAD_KEYS) else 'backbone.') + k: v for k, v in sd.items()}


# --------------------------------------------------------------------------- entry points
def load_timm_state_dict(path: str, key: str = 'checkpoint',
                         fmt: str = 'auto') -> Tuple[Dict[str, torch.Tensor], str]:
    """Any supported file -> (timm-named state dict, detected format).

    Args:
        path: local weights file.
        key: config key/option that named it (error messages).
        fmt: 'auto', 'timm', 'npz', 'mmpretrain' or 'ovkit'.
    """
    raw = read_file(path, key)
    fmt = detect_format(raw, path, key) if fmt == 'auto' else fmt
    try:
        if fmt == 'npz':
            sd = npz_to_timm(raw, path=_where(path, key))
        elif fmt == 'mmpretrain':
            sd = mmpretrain_to_timm(raw, path)
        elif fmt == 'ovkit':
            sd = ovkit_to_timm(raw)
        elif fmt == 'timm':
            sd = {k: v for k, v in raw.items()}
        else:
            raise WeightsError(f'{_where(path, key)}: unknown format {fmt!r}; use one of '
                               "'auto', 'timm', 'npz', 'mmpretrain', 'ovkit'")
    except KeyError as e:  # a partial file, or a --format that is not the file's
        raise WeightsError(f'{_where(path, key)} ({fmt} layout) lacks the array {e}') from None
    if not sd or 'patch_embed.proj.weight' not in sd:
        raise WeightsError(f'{_where(path, key)}: no ViT patch embedding among its {fmt} keys '
                           f'(first keys: {", ".join(list(raw)[:6])})')
    # timm's checkpoint filter: old patchify-as-linear patch weights
    w = sd.get('patch_embed.proj.weight')
    if w is not None and w.ndim == 2:
        side = int(round((w.shape[1] // 3)**0.5))
        sd['patch_embed.proj.weight'] = w.reshape(w.shape[0], 3, side, side)
    return sd, fmt


def describe(sd: Dict[str, torch.Tensor]) -> dict:
    """The OVKitViT/OVKitViTClsHead arguments a timm-named state dict implies.

    Args:
        sd: timm-named state dict.
    """
    w = sd['patch_embed.proj.weight']
    depth = 1 + max(int(k.split('.')[1]) for k in sd if k.startswith('blocks.'))
    prefix = int('cls_token' in sd) + int('dist_token' in sd)
    grid = int(round((sd['pos_embed'].shape[1] - prefix)**0.5))
    from .backbone import ARCHS
    arch = next((name for name, (d, n, _, _) in ARCHS.items()
                 if d == w.shape[0] and n == depth), None)
    info = dict(arch=arch, embed_dim=w.shape[0], depth=depth, patch_size=w.shape[-1],
                img_size=grid * w.shape[-1], class_token='cls_token' in sd,
                distilled='dist_token' in sd,
                global_pool='avg' if 'fc_norm.weight' in sd else 'token',
                representation_size=(sd['pre_logits.fc.weight'].shape[0]
                                      if 'pre_logits.fc.weight' in sd else None),
                num_classes=sd['head.weight'].shape[0] if 'head.weight' in sd else 0)
    return info


def load_backbone_weights(backbone, path: str, key: str = 'pretrained', fmt: str = 'auto'):
    """Load any supported file into an :class:`OVKitViT` (heads dropped).

    ``pos_embed`` is resampled to the backbone's grid: bilinear for JAX files (timm's npz
    loader), bicubic+antialias otherwise (timm's state-dict filter).

    Args:
        backbone: the OVKitViT.
        path: local weights file.
        key: config key that named the file (error messages).
        fmt: see :func:`load_timm_state_dict`.
    """
    full, fmt = load_timm_state_dict(path, key, fmt)
    sd = {k: v for k, v in full.items() if not k.startswith(HEAD_KEYS)}
    if isinstance(backbone.pre_logits, torch.nn.Identity):
        sd = {k: v for k, v in sd.items() if not k.startswith('pre_logits.')}
    pos = sd.get('pos_embed')
    if pos is not None and pos.shape != backbone.pos_embed.shape:
        jax = fmt == 'npz'
        sd['pos_embed'] = resample_abs_pos_embed(
            pos, backbone.grid_size, num_prefix_tokens=backbone.num_prefix_tokens,
            interpolation='bilinear' if jax else 'bicubic', antialias=not jax)
    own = backbone.state_dict()
    bad = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
           for k, v in sd.items() if k in own and v.shape != own[k].shape]
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if bad or missing or unexpected:
        raise WeightsError(
            f'{key} = {path!r} ({fmt} layout) does not fit this OVKitViT: '
            + '; '.join(filter(None, [
                'shape mismatch ' + ', '.join(bad[:4]) if bad else '',
                'missing ' + ', '.join(missing[:6]) if missing else '',
                'unexpected ' + ', '.join(unexpected[:6]) if unexpected else ''])) +
            f'. The file implies {describe(full)}; set the '
            'backbone arch/patch_size/global_pool/distilled/representation_size to match.')
    backbone.load_state_dict(sd, strict=True)
    return fmt
