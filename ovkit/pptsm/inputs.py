"""The files PP-TSM configs read, declared for the preflight (:mod:`ovkit.engine.preflight`).

The preflight already checks every dataset's ``ann_file`` and ``data_prefix.video`` folder,
``load_from`` and ``--resume``; this module adds the backbone's ``pretrained`` checkpoint (a
plain string, not an ``init_cfg``, so the generic walk does not see it) and says how to obtain
each file of the PP-TSM layouts (docs/pptsm.md), so that a missing one is one line naming the
config key, the path and the fix, before any process starts.
"""
from ovkit.engine.preflight import declare_fix, declare_input

CONVERT = '`python tools/model_converters/pptsm_paddle.py {src} {path}`'
# What each checkpoint name of the configs is converted from (PaddleVideo / PaddleClas files).
SOURCES = (('pptsm_k400_uniform_distill', 'ppTSM_k400_uniform_distill.pdparams'),
           ('resnet50_vd_ssld_v2', 'ResNet50_vd_ssld_v2_pretrained.pdparams'),
           ('resnet101_vd_ssld', 'ResNet101_vd_ssld_pretrained.pdparams'))


def pretrained_fix(path, node, key):
    """How to obtain the converted checkpoint ``path`` named by ``key``.

    Args:
        path: the configured path.
        node: the backbone config dict.
        key: the dotted config key (``model.backbone.pretrained``).
    """
    if path.endswith(('.pdparams', '.pdopt')):
        return (f'this is a Paddle file: convert it with `python tools/model_converters/'
                f'pptsm_paddle.py {path} OUT.pth` and set {key}=OUT.pth')
    src = next((s for name, s in SOURCES if name in path), 'THE_PADDLE_FILE.pdparams')
    return (f'download {src} (published by PaddleVideo / PaddleClas, docs/pptsm.md lists '
            f'them; ovkit never downloads), convert it with {CONVERT.format(src=src, path=path)}'
            f' (or point PRETRAINED= / --cfg-options {key}=... at a converted file; '
            f'{key}=None trains from scratch or tests a trained checkpoint)')


declare_input('backbone.pretrained', kind='checkpoint', fix=pretrained_fix)
# ``load_from`` (a whole converted recognizer) is checked by the preflight itself; this says how
# to make one when its name is a converted PP-TSM checkpoint's.
declare_fix(r'^(.*pptsm[^/]*\.pth)$',
            r'convert the PaddleVideo .pdparams with `python tools/model_converters/'
            r'pptsm_paddle.py IN.pdparams \1` (docs/pptsm.md, "Weights and the converter")')

UCF101_LISTS = ('write the UCF101 lists ("path label" per line, the .avi optional) with '
                "mmaction2's tools/data/ucf101/ (download_annotations.sh, then "
                'generate_videos_filelist.sh) or take PaddleVideo\'s, into \\1 (DATA_ROOT, '
                'docs/pptsm.md "Data layout")')
declare_fix(r'^(.*?)/?ucf101_(train|val)_split_\d_videos\.txt$', UCF101_LISTS)
declare_fix(r'^(.*?ucf101)/videos$',
            r"put the UCF101 videos there (<Class>/v_<Class>_gXX_cXX.avi; mmaction2's "
            r'tools/data/ucf101/download_videos.sh) or set DATA_ROOT to the folder holding them')
declare_fix(r'^(.*?)/?kinetics400_(train|val)_list_videos\.txt$',
            r"write the Kinetics-400 lists with mmaction2's tools/data/kinetics/ "
            r'(generate_videos_filelist.sh kinetics400) into \1, or set DATA_ROOT')
declare_fix(r'^(.*?kinetics400)/videos_(train|val)$',
            r"put the Kinetics-400 \2 videos there (mmaction2's tools/data/kinetics/) or set "
            r'DATA_ROOT to the folder holding videos_train and videos_val')
# The shapes videos of the tiny configs (the shared default would not add --kinds video).
declare_fix(r'^(.*?shapes)/video(/|$)',
            r'generate it with `python tools/data/make_shapes.py --out \1 --kinds video`')
