"""Write CLIP class embeddings [num_classes, D] (.npy) for an open-vocabulary classifier.

Each row is the mean of the L2-normalised CLIP text features of the class name in every prompt
template, renormalised. ``--layer k`` takes the output after k text blocks instead of the
projected output, which is what BARON's ``use_attn12_output`` head compares against (k=12), e.g.:

    python tools/data/gen_class_embeddings.py --classes coco_ov_65.txt \
        --out data/metadata/coco_ov_65_clip_attn12.npy --layer 12 \
        --clip-checkpoint checkpoints/clip/ViT-B-32.pt

The weights are read from a local file only (see ``ovkit.clip.build_clip``).
"""
import argparse
import os
import os.path as osp
import sys

import numpy as np
import torch

DEFAULT_TEMPLATES = 'prompt_templates.txt'  # shipped in ovkit.metadata


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--classes', required=True,
                        help='class names file, one per line, or a shipped list '
                        '(e.g. coco_ov_65.txt)')
    parser.add_argument('--out', required=True, help='output .npy path')
    parser.add_argument('--templates', default=DEFAULT_TEMPLATES,
                        help='prompt templates file (default: the shipped prompt_templates.txt)')
    parser.add_argument('--model-name', default='ViT-B-32',
                        help="open_clip architecture, or 'tiny' for a random test model")
    parser.add_argument('--clip-checkpoint', default='checkpoints/clip/ViT-B-32.pt',
                        help='local CLIP weights (OpenAI .pt or open_clip state dict); ignored '
                             "for --model-name tiny unless the file exists")
    parser.add_argument('--layer', type=int, default=None,
                        help='take the output after this many text blocks (BARON attn12: 12); '
                             'default: the projected output')
    parser.add_argument('--seed', type=int, default=0, help='init seed of the tiny model')
    parser.add_argument('--batch-size', type=int, default=512)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from ovkit.clip import (
        build_class_embeddings,
        build_clip,
        load_class_names,
        load_prompt_templates,
    )
    from ovkit.clip.builder import checkpoint_hint

    clip_cfg = dict(model_name=args.model_name, seed=args.seed)
    if args.model_name != 'tiny' or osp.isfile(args.clip_checkpoint):
        if not osp.isfile(args.clip_checkpoint):
            hint = checkpoint_hint(args.model_name, '--clip-checkpoint')
            sys.exit(f"--clip-checkpoint '{args.clip_checkpoint}' not found (absolute: "
                     f'{osp.abspath(args.clip_checkpoint)}). {hint}')
        clip_cfg['checkpoint'] = args.clip_checkpoint
    class_names = load_class_names(args.classes)
    templates = load_prompt_templates(args.templates)
    clip = build_clip(clip_cfg).to(args.device)
    feats = build_class_embeddings(clip, class_names, templates, layer=args.layer,
                                   batch_size=args.batch_size)
    out_dir = osp.dirname(osp.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    np.save(args.out, feats.cpu().numpy().astype(np.float32))
    print(f'{args.out}: {tuple(feats.shape)} from {len(class_names)} classes x '
          f'{len(templates)} templates, CLIP {args.model_name}, '
          f"{'projected output' if args.layer is None else f'layer {args.layer}'}")
    return feats

