"""Convert PaddleVideo PP-TSM weights (.pdparams) into an mmaction2 checkpoint with ovkit names.

    python tools/model_converters/pptsm_paddle.py ppTSM_k400_uniform.pdparams pptsm_k400.pth

A ``.pdparams`` file is a plain pickle of ``name -> numpy array`` (no Paddle needed). Handled:
full recognizers (``backbone.``/``head.`` prefixes), distillation checkpoints (``Student.``
kept, ``Teacher.`` dropped) and ImageNet ``ResNet*_vd`` files (bare backbone names; their 1000-
class ``out``/``fc`` classifier is dropped). Every key is either mapped or reported; unknown
keys make the tool fail unless ``--allow-unknown`` is given.

Name mapping (PaddleVideo -> ovkit / mmpretrain ``ResNetV1d``):
``conv1_k`` -> ``stem.{k-1}.conv/bn``; ``bb_S_I.convJ`` -> ``layer{S+1}.I.conv{J+1}/bn{J+1}``;
``bb_S_I.short`` -> ``downsample.0/.1`` (S = 0) or ``downsample.1/.2`` (after the avg pool);
basic blocks ``res{S+2}{a,b,..}`` likewise with ``downsample.0/.1``; BN ``_mean``/``_variance``
-> ``running_mean``/``running_var``; ``head.fc.weight`` [in, out] -> ``cls_head.fc_cls.weight``
transposed (Paddle's Linear stores [in, out]).
"""
import argparse
import os.path as osp
import pickle
import re
import sys
from collections import OrderedDict

import numpy as np

__all__ = ['load_pdparams', 'convert_pdparams', 'main']

PUBLISHED = ('PP-TSM weights are published by PaddleVideo (docs/en/model_zoo/recognition/'
             'pp-tsm.md, e.g. ppTSM_k400_uniform_distill.pdparams) and the ImageNet '
             'ResNet50_vd_ssld_v2_pretrained.pdparams by PaddleVideo/PaddleClas; download them '
             'yourself, ovkit never downloads.')

_BN = {'weight': 'weight', 'bias': 'bias', '_mean': 'running_mean',
       '_variance': 'running_var'}
_STEM = re.compile(r'^conv1_([123])\.(_conv|_batch_norm)\.(\w+)$')
_BOTTLENECK = re.compile(r'^bb_(\d+)_(\d+)\.(conv[012]|short)\.(_conv|_batch_norm)\.(\w+)$')
_BASIC = re.compile(r'^res(\d)([a-z])\.(conv[01]|short)\.(_conv|_batch_norm)\.(\w+)$')
_HEAD = re.compile(r'^fc\.(weight|bias)$')
_IMAGENET_FC = re.compile(r'^(out|fc|fc_0)\.(weight|bias|w_0|b_0)$')


def load_pdparams(path):
    """Read a ``.pdparams`` pickle into ``{name: ndarray}``.

    Args:
        path: file written by ``paddle.save``.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such file. {PUBLISHED}')
    try:
        with open(path, 'rb') as f:
            obj = pickle.load(f, encoding='latin1')
    except Exception as err:  # pickle raises many types on foreign files
        raise ValueError(f'{path}: not a readable .pdparams pickle ({type(err).__name__}: '
                         f'{err}). Paddle >= 2.0 dygraph files are expected.') from err
    if not isinstance(obj, dict):
        raise ValueError(f'{path}: expected a dict of arrays, found {type(obj).__name__}.')
    obj = {k: v for k, v in obj.items() if k != 'StructuredToParameterName@@'}
    bad = [k for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if bad:
        raise ValueError(f'{path}: {len(bad)} entries are not numpy arrays (e.g. {bad[0]!r}); '
                         'is this an optimizer (.pdopt) file?')
    return obj


def _bn_name(paddle_leaf, key):
    if paddle_leaf not in _BN:
        raise KeyError(key)
    return _BN[paddle_leaf]


def _map_backbone(name, key, report):
    """Backbone name without prefix -> ovkit name (without ``backbone.``), or None."""
    m = _STEM.match(name)
    if m:
        k, part, leaf = m.groups()
        base = f'stem.{int(k) - 1}'
        return f'{base}.conv.weight' if part == '_conv' else f'{base}.bn.{_bn_name(leaf, key)}'
    m = _BOTTLENECK.match(name)
    if m:
        s, i, conv, part, leaf = m.groups()
        s, i = int(s), int(i)
        report['block'] = 'bottleneck'
        report.setdefault('stages', {}).setdefault(s, set()).add(i)
        if conv == 'short':
            c, b = ('0', '1') if s == 0 else ('1', '2')
            base = f'layer{s + 1}.{i}.downsample.'
            return base + (f'{c}.weight' if part == '_conv' else f'{b}.{_bn_name(leaf, key)}')
        j = int(conv[-1]) + 1
        base = f'layer{s + 1}.{i}.'
        return base + (f'conv{j}.weight' if part == '_conv' else f'bn{j}.{_bn_name(leaf, key)}')
    m = _BASIC.match(name)
    if m:
        stage, letter, conv, part, leaf = m.groups()
        s, i = int(stage) - 2, ord(letter) - ord('a')
        report['block'] = 'basic'
        report.setdefault('stages', {}).setdefault(s, set()).add(i)
        base = f'layer{s + 1}.{i}.'
        if conv == 'short':
            return base + ('downsample.0.weight' if part == '_conv'
                           else f'downsample.1.{_bn_name(leaf, key)}')
        j = int(conv[-1]) + 1
        return base + (f'conv{j}.weight' if part == '_conv' else f'bn{j}.{_bn_name(leaf, key)}')
    return None


_DEPTHS = {('bottleneck', (3, 4, 6, 3)): 50, ('bottleneck', (3, 4, 23, 3)): 101,
           ('bottleneck', (3, 8, 36, 3)): 152, ('basic', (2, 2, 2, 2)): 18,
           ('basic', (3, 4, 6, 3)): 34}


def convert_pdparams(params, backbone_only=False):
    """Map Paddle tensors to an ovkit/mmaction2 state dict.

    Args:
        params: ``{paddle name: ndarray}`` as returned by :func:`load_pdparams`.
        backbone_only: drop the classification head even when the file has one.

    Returns:
        tuple: (state_dict of torch tensors, report dict with ``mapped``, ``dropped``
        (name -> reason), ``unknown``, ``added``, ``depth``, ``num_classes``).
    """
    import torch
    state = OrderedDict()
    report = {'mapped': {}, 'dropped': {}, 'unknown': [], 'added': [], 'num_classes': None}
    for key, value in params.items():
        name = key
        if name.startswith('Teacher.'):
            report['dropped'][key] = 'distillation teacher'
            continue
        if name.startswith('Student.'):
            name = name[len('Student.'):]
        in_head = name.startswith('head.')
        name = name[len('backbone.'):] if name.startswith('backbone.') else name
        name = name[len('head.'):] if in_head else name
        try:
            if in_head:
                m = _HEAD.match(name)
                if m is None:
                    raise KeyError(key)
                if backbone_only:
                    report['dropped'][key] = 'head (--backbone-only)'
                    continue
                leaf = m.group(1)
                arr = value.T if leaf == 'weight' else value  # Paddle Linear: [in, out]
                if leaf == 'weight':
                    report['num_classes'] = arr.shape[0]
                new = f'cls_head.fc_cls.{leaf}'
            elif _IMAGENET_FC.match(name):
                report['dropped'][key] = 'ImageNet classifier'
                continue
            else:
                new = _map_backbone(name, key, report)
                if new is None:
                    raise KeyError(key)
                new, arr = 'backbone.' + new, value
        except KeyError:
            report['unknown'].append(key)
            continue
        if new in state:
            raise ValueError(f'two Paddle tensors map to {new}: is the file a mix of student '
                             f'and plain weights? (second one: {key})')
        state[new] = torch.from_numpy(np.ascontiguousarray(arr).copy())
        report['mapped'][key] = new
    # torch BatchNorm also keeps num_batches_tracked; add them so the state dict is complete.
    for name in list(state):
        if name.endswith('.running_var'):
            nbt = name[:-len('running_var')] + 'num_batches_tracked'
            state[nbt] = torch.tensor(0, dtype=torch.long)
            report['added'].append(nbt)
    stages = report.pop('stages', {})
    counts = tuple(len(stages.get(s, ())) for s in range(4))
    report['depth'] = _DEPTHS.get((report.pop('block', None), counts))
    return state, report


def _format_report(report, path):
    lines = [f'{path}: {len(report["mapped"])} tensors mapped, '
             f'{len(report["dropped"])} dropped, {len(report["unknown"])} unknown, '
             f'{len(report["added"])} num_batches_tracked added; '
             f'depth {report["depth"] or "unrecognised"}, '
             f'head {"absent" if report["num_classes"] is None else report["num_classes"]}'
             f'{"" if report["num_classes"] is None else " classes"}.']
    reasons = {}
    for key, why in report['dropped'].items():
        reasons.setdefault(why, []).append(key)
    for why, keys in reasons.items():
        lines.append(f'  dropped ({why}): {len(keys)}, e.g. {", ".join(keys[:3])}')
    for key in report['unknown']:
        lines.append(f'  UNKNOWN: {key}')
    return '\n'.join(lines)


def main(argv=None):
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description='Convert a PaddleVideo PP-TSM / ResNet-vd .pdparams file into an '
        'mmaction2 checkpoint with ovkit names.')
    parser.add_argument('src', help='input .pdparams file')
    parser.add_argument('dst', help='output .pth checkpoint')
    parser.add_argument('--backbone-only', action='store_true',
                        help='drop the classification head (for fine-tuning on other classes)')
    parser.add_argument('--allow-unknown', action='store_true',
                        help='write the checkpoint even when some keys are not understood')
    parser.add_argument('--verbose', action='store_true', help='print every key mapping')
    args = parser.parse_args(argv)

    import torch
    try:
        params = load_pdparams(args.src)
    except (FileNotFoundError, ValueError) as err:
        sys.exit(f'error: {err}')
    state, report = convert_pdparams(params, backbone_only=args.backbone_only)
    print(_format_report(report, args.src))
    if args.verbose:
        for key, new in report['mapped'].items():
            print(f'  {key} -> {new}')
    if report['unknown'] and not args.allow_unknown:
        sys.exit(f'error: {len(report["unknown"])} keys of {args.src} are not PP-TSM / '
                 'ResNet-vd names (listed above); nothing written. Pass --allow-unknown to '
                 'write the mapped tensors anyway.')
    if not report['mapped']:
        sys.exit(f'error: no tensor of {args.src} could be mapped; nothing written.')
    meta = dict(source=osp.basename(args.src), converter='ovkit.pptsm.convert',
                depth=report['depth'], num_classes=report['num_classes'])
    out_dir = osp.dirname(osp.abspath(args.dst))
    if not osp.isdir(out_dir):
        sys.exit(f'error: output folder {out_dir} does not exist.')
    torch.save({'state_dict': state, 'meta': meta}, args.dst)
    print(f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    main()
