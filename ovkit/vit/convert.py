"""Convert timm / JAX .npz / mmpretrain ViT weights into an ovkit checkpoint.

``python tools/model_converters/vit.py SRC DST [--img-size 384]``. The output is an mmengine
checkpoint (``state_dict`` + ``meta``) of an mmpretrain ImageClassifier built from
:class:`OVKitViT` + :class:`OVKitViTClsHead`: timm keys under ``backbone.`` and ``head.``,
usable as ``tools/test.py CONFIG DST`` or ``load_from = DST``. The arguments the config needs
are printed (and stored in ``meta``).
"""
import argparse
import os
import os.path as osp

import torch

from .pos_embed import resample_abs_pos_embed
from .weights import describe, load_timm_state_dict, timm_to_ovkit


def convert(src: str, dst: str, fmt: str = 'auto', img_size=None) -> dict:
    """Write ``src`` as an ovkit checkpoint at ``dst``; return the implied model arguments.

    Args:
        src: local weights file (timm .pth/.safetensors, JAX .npz, mmpretrain .pth).
        dst: output .pth path.
        fmt: 'auto', 'timm', 'npz', 'mmpretrain' or 'ovkit'.
        img_size: resample ``pos_embed`` for this input size (None keeps the file's).
    """
    sd, fmt = load_timm_state_dict(src, key='SRC', fmt=fmt)
    info = describe(sd)
    if img_size and img_size != info['img_size']:
        prefix = int(info['class_token']) + int(info['distilled'])
        grid = img_size // info['patch_size']
        jax = fmt == 'npz'  # timm's npz loader interpolates bilinearly, its sd filter bicubic
        sd['pos_embed'] = resample_abs_pos_embed(
            sd['pos_embed'], (grid, grid), num_prefix_tokens=prefix,
            interpolation='bilinear' if jax else 'bicubic', antialias=not jax)
        info['img_size'] = grid * info['patch_size']
    info['source_format'] = fmt
    info['source'] = osp.basename(src)
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': timm_to_ovkit(sd), 'meta': {'ovkit_vit': info}}, dst)
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='local weights file (.pth, .safetensors, .npz)')
    parser.add_argument('dst', help='output ovkit checkpoint (.pth)')
    parser.add_argument('--format', default='auto',
                        choices=['auto', 'timm', 'npz', 'mmpretrain', 'ovkit'])
    parser.add_argument('--img-size', type=int, default=None,
                        help='resample the position embedding for this input size')
    args = parser.parse_args(argv)
    info = convert(args.src, args.dst, args.format, args.img_size)
    print(f'wrote {args.dst} ({info["source_format"]} -> ovkit)')
    arch = repr(info['arch']) if info['arch'] else (
        'dict(embed_dim={embed_dim}, depth={depth}, num_heads=...)'.format(**info))
    print(f'config: model.backbone = dict(type="OVKitViT", arch={arch}, '
          'patch_size={patch_size}, img_size={img_size}, class_token={class_token}, '
          'global_pool={global_pool!r}, distilled={distilled}, representation_size='
          '{representation_size}); model.head.num_classes = {num_classes}'.format(**info))
    return info


if __name__ == '__main__':
    main()
