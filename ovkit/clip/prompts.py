"""Class embeddings from class names and a hand-crafted prompt ensemble.

Used twice: offline by ``tools/data/gen_class_embeddings.py`` (writes the ``.npy`` a config points
to) and at open-vocabulary test time for new class lists. Both call
:func:`build_class_embeddings`, which encodes prompts through ``CLIPModel.encode_text`` with the
same ``layer`` the detector uses for regions, so the two always share one space.
"""
import string
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from ovkit.metadata import class_names, read_lines

__all__ = ['load_class_names', 'load_prompt_templates', 'format_prompt', 'build_class_embeddings']


def load_class_names(path: str) -> List[str]:
    """Class names, one per line (blank lines and ``#`` comments skipped), order preserved.

    Args:
        path: a file path, or the name of a list ovkit ships (``ovkit.metadata``).
    """
    return list(class_names(path))


def _check_template(template: str, where: str):
    fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    if fields.count('') != 1 or any(f not in ('', 'article') for f in fields):
        raise ValueError(f"{where}: template {template!r} must contain exactly one '{{}}' for the "
                         "class name and optionally '{article}' (a/an); nothing else in braces.")


def load_prompt_templates(path: str) -> List[str]:
    """Prompt templates, one per line, each with one ``{}`` (class name), optional ``{article}``."""
    templates = read_lines(path, 'prompt templates')
    if not templates:
        raise ValueError(f"prompt templates file '{path}' has no templates.")
    for i, template in enumerate(templates):
        _check_template(template, f"'{path}' template {i + 1}")
    return templates


def _clean_name(name: str) -> str:
    # LVIS names use '_' for spaces; Objects365 uses '/' between synonyms.
    return name.replace('_', ' ').replace('/', ' or ').strip().rstrip('.').lower()


def format_prompt(template: str, name: str) -> str:
    """``template`` filled with the cleaned class name and its article (a/an)."""
    name = _clean_name(name)
    return template.format(name, article='an' if name[:1] in 'aeiou' else 'a')


@torch.no_grad()
def build_class_embeddings(clip, class_names: Sequence[str], templates: Sequence[str],
                           layer: Optional[int] = None, batch_size: int = 512) -> torch.Tensor:
    """[num_classes, D] float32: per class, the mean of L2-normalised prompt features, renormalised.

    ``layer`` as in ``CLIPModel.encode_text`` (None: projected output, D = embed_dim; k: output of
    block k, D = text_width, BARON's "attn12" with k=12).
    """
    if len(class_names) == 0 or len(templates) == 0:
        raise ValueError('build_class_embeddings needs at least one class name and one template.')
    for i, template in enumerate(templates):
        _check_template(template, f'templates[{i}]')
    prompts = [format_prompt(t, name) for name in class_names for t in templates]
    tokens = clip.tokenize(prompts)
    feats = torch.cat([clip.encode_text(tokens[i:i + batch_size], layer=layer, normalize=True)
                       .float() for i in range(0, len(prompts), batch_size)])
    feats = feats.view(len(class_names), len(templates), -1).mean(dim=1)
    return F.normalize(feats, dim=-1)
