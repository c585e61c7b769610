"""Build a frozen :class:`CLIPModel` from a config dict; weights come from a local file only.

Nothing is downloaded at run time: a missing checkpoint fails with the config key, the path and
where to obtain the file. OpenAI ``.pt`` files (TorchScript archives or state dicts) and open_clip
state dicts (also our own ``CLIPModel.state_dict()``) are read; OpenAI weights imply QuickGELU.
"""
import contextlib
import logging
import os.path as osp
import warnings
import zipfile
from typing import Optional, Tuple

import torch

from .model import CLIPModel

__all__ = ['build_clip', 'load_clip_state_dict', 'checkpoint_hint', 'TINY_CLIP_CFG']

# Random tiny CLIP for tests and CI: real vocabulary/context (so the real tokenizer works), tiny
# towers. Same layout as OpenAI CLIP, so every code path of the real model runs.
TINY_CLIP_CFG = dict(
    embed_dim=64,
    vision_cfg=dict(image_size=64, layers=2, width=64, patch_size=16, head_width=32),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2),
)
_KEYS = ('model_name', 'checkpoint', 'seed', 'quick_gelu')
# Entries of OpenAI's TorchScript state dicts that are not weights.
_OPENAI_META_KEYS = ('input_resolution', 'context_length', 'vocab_size')


def checkpoint_hint(model_name: str, key: str = 'clip_cfg.checkpoint') -> str:
    """How to obtain the weights for ``model_name``: appended to every missing-file error."""
    if model_name == 'tiny':  # ovkit's own architecture: nothing to download, it is trained here
        return ('The tiny CLIP that knows the shapes classes is made by '
                '`python tools/data/train_shapes_clip.py --out-dir data/shapes/clip --seed 0` '
                f'(a few CPU minutes; docs/baron.md); without {key} the tiny CLIP is random.')
    url = ''
    try:
        from open_clip.pretrained import get_pretrained_url
        url = get_pretrained_url(model_name, 'openai')
    except Exception:  # hint only; never fail on it
        pass
    where = (f'OpenAI\'s CLIP release ({url}, the same file as open_clip\'s pretrained tag '
             f"'openai' for '{model_name}')" if url else
             f"the open_clip release for '{model_name}' (see open_clip.list_pretrained())")
    return (f'Download the weights once from {where} on a machine with internet access and place '
            f'the file at that path, or set {key} to where the file is. ovkit never fetches '
            'weights at run time.')


def _is_torchscript(path: str) -> bool:
    # Same test torch.load uses: a TorchScript zip archive holds constants.pkl.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(name.endswith('constants.pkl') for name in zf.namelist())


def load_clip_state_dict(path: str) -> Tuple[dict, bool]:
    """Read a CLIP checkpoint into an open_clip ``CLIP`` state dict.

    Returns ``(state_dict, is_openai)``. ``is_openai`` is True for OpenAI's files (TorchScript
    archive, its meta entries, or half-precision weights as OpenAI ships them): those models were
    trained with QuickGELU. Accepts wrappers ``{'state_dict': ...}`` and ``module.``/``model.``
    key prefixes (DDP, :class:`CLIPModel`).
    """
    if _is_torchscript(path):
        with warnings.catch_warnings():  # torch 2.14 deprecates TorchScript; OpenAI ships it
            warnings.simplefilter('ignore', FutureWarning)
            archive = torch.jit.load(path, map_location='cpu')
        state_dict, is_openai = archive.state_dict(), True
    else:
        state_dict = torch.load(path, map_location='cpu', weights_only=True)
        is_openai = False
        if isinstance(state_dict, dict) and isinstance(state_dict.get('state_dict'), dict):
            state_dict = state_dict['state_dict']
        if not isinstance(state_dict, dict):
            raise TypeError(f'{path}: expected a CLIP state dict, found {type(state_dict)}.')
    state_dict = dict(state_dict)
    for prefix in ('module.', 'model.'):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    if any(k in state_dict for k in _OPENAI_META_KEYS):
        is_openai = True
    for key in _OPENAI_META_KEYS:
        state_dict.pop(key, None)
    proj = state_dict.get('text_projection')
    if isinstance(proj, torch.Tensor) and proj.dtype == torch.float16:
        is_openai = True
    return state_dict, is_openai


@contextlib.contextmanager
def _quiet_open_clip():
    """open_clip logs 'initialized randomly' for pretrained=None; we load weights right after."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _create_architecture(model_name: str, quick_gelu: bool, seed: Optional[int]):
    import open_clip
    from open_clip.model import CLIP
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if model_name == 'tiny':
            return CLIP(**TINY_CLIP_CFG, quick_gelu=quick_gelu)
        if model_name not in open_clip.list_models():
            raise ValueError(f"clip_cfg.model_name='{model_name}' is not an open_clip "
                             "architecture; use 'tiny' or one of open_clip.list_models(), e.g. "
                             "'ViT-B-32'.")
        with _quiet_open_clip():
            return open_clip.create_model(model_name, pretrained=None,
                                          force_quick_gelu=quick_gelu)


def _load_into(model, state_dict: dict, path: str, model_name: str, key: str):
    own = model.state_dict()
    # Traced archives also carry buffers the eager model keeps out of its state dict (attn_mask).
    for name, _ in model.named_buffers():
        if name not in own:
            state_dict.pop(name, None)
    if 'logit_scale' in state_dict and 'logit_scale' in own:
        state_dict['logit_scale'] = state_dict['logit_scale'].reshape(own['logit_scale'].shape)
    missing = sorted(own.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - own.keys())
    mismatched = [f'{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in sorted(own.keys() & state_dict.keys())
                  if state_dict[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        parts = []
        for name, items in (('missing', missing), ('unexpected', unexpected),
                            ('shape mismatches', mismatched)):
            if items:
                parts.append(f"{len(items)} {name} (e.g. {', '.join(items[:3])})")
        raise ValueError(
            f"{key}='{path}' does not fit {key.rsplit('.', 1)[0]}.model_name='{model_name}': "
            f"{'; '.join(parts)}. Set model_name to the architecture the file was trained with "
            "(e.g. 'ViT-B-16' for ViT-B-16.pt).")
    bad = [k for k, v in state_dict.items() if isinstance(v, torch.Tensor)
           and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a NaN weight makes every embedding and loss NaN, silently
        from ovkit.engine.guards import NonFiniteArrayError
        raise NonFiniteArrayError(f"{key}='{path}' holds NaN/inf in {len(bad)} tensors "
                                  f"({', '.join(bad[:3])}); the file is damaged: download it "
                                  'again.')
    model.load_state_dict(state_dict, strict=True)  # copies and casts fp16 -> fp32


def build_clip(cfg, cfg_key: str = 'clip_cfg') -> CLIPModel:
    """Build a frozen :class:`CLIPModel`.

    ``cfg`` keys: ``model_name`` (open_clip architecture such as ``'ViT-B-32'``, or ``'tiny'`` for
    a random test model), ``checkpoint`` (local file; required unless ``model_name='tiny'``),
    ``seed`` (initialisation seed when no checkpoint, default 0), ``quick_gelu`` (None: QuickGELU
    iff the file is an OpenAI checkpoint or the name ends in ``-quickgelu``). ``cfg_key`` is the
    config path used in error messages. A :class:`CLIPModel` is returned unchanged.
    """
    if isinstance(cfg, CLIPModel):
        return cfg
    if not hasattr(cfg, 'keys'):
        raise TypeError(f'{cfg_key} must be a dict such as dict(model_name=\'ViT-B-32\', '
                        f"checkpoint='checkpoints/clip/ViT-B-32.pt'), got {type(cfg).__name__}.")
    cfg = dict(cfg)
    unknown = sorted(set(cfg) - set(_KEYS))
    if unknown:
        raise ValueError(f'{cfg_key} has unknown key(s) {unknown}; allowed: {list(_KEYS)}.')
    model_name = cfg.get('model_name')
    if not model_name:
        raise ValueError(f"{cfg_key}.model_name is required, e.g. 'ViT-B-32' (or 'tiny' for a "
                         'random test model).')
    checkpoint = cfg.get('checkpoint')
    quick_gelu = cfg.get('quick_gelu')
    ckpt_key = f'{cfg_key}.checkpoint'
    state_dict, is_openai = None, False
    if checkpoint is None:
        if model_name != 'tiny':
            raise ValueError(f"{ckpt_key} is required for model_name='{model_name}' (a randomly "
                             f'initialised CLIP is useless outside tests). '
                             f'{checkpoint_hint(model_name, ckpt_key)}')
    else:
        checkpoint = str(checkpoint)
        if not osp.isfile(checkpoint):
            raise FileNotFoundError(
                f"{ckpt_key}='{checkpoint}' not found (absolute path: "
                f"{osp.abspath(checkpoint)}). {checkpoint_hint(model_name, ckpt_key)}")
        state_dict, is_openai = load_clip_state_dict(checkpoint)
    if quick_gelu is None:
        quick_gelu = is_openai or model_name == 'tiny' or model_name.endswith('-quickgelu')
    model = _create_architecture(model_name, bool(quick_gelu), cfg.get('seed', 0))
    if state_dict is not None:
        _load_into(model, state_dict, checkpoint, model_name, ckpt_key)
    return CLIPModel(model, model_name=model_name)
