"""The files BARON configs read, declared for the preflight (:mod:`ovkit.engine.preflight`).

Importing this module (``ovkit.baron`` does) also registers ovkit.engine's hooks, which the
runtime bases enable, for configs whose ``custom_imports`` name only ``ovkit.baron``.
"""
from ovkit.engine.preflight import declare_fix, declare_input

EMBEDDINGS_FIX = ('generate it with `python tools/data/gen_class_embeddings.py --classes '
                  '<the config\'s class list> --out {path} --model-name <clip_cfg.model_name>` '
                  '(add --layer 12 for use_attn12_output), one row per class in order')


def embedding_width(path, head, cfg):
    """The class embeddings must be as wide as the CLIP output the head compares them with.

    Args:
        path: the ``.npy`` file (already checked readable and 2-D).
        head: the bbox head's config dict.
        cfg: the whole config dict.
    """
    import numpy as np

    from ovkit.clip.builder import TINY_CLIP_CFG
    clip = ((cfg.get('model') or {}).get('clip_cfg') or {})
    name = clip.get('model_name')
    if name == 'tiny':
        arch = TINY_CLIP_CFG
    else:
        try:
            import open_clip
            arch = open_clip.get_model_config(name) if name else None
        except Exception:
            arch = None
    if not arch:
        return None
    layer = 12 if head.get('use_attn12_output') else head.get('text_layer')
    width = arch['text_cfg']['width'] if layer is not None else arch['embed_dim']
    dim = np.load(path, mmap_mode='r').shape[1]
    if dim != width:
        which = f'text width (text_layer={layer})' if layer is not None else 'embed_dim'
        return (f'has {dim}-d rows but CLIP {name} gives {width}-d region embeddings ({which}): '
                'the file was made with another CLIP')
    return None


def clip_checkpoint_fix(path, node, key):
    from ovkit.clip.builder import checkpoint_hint
    return checkpoint_hint(node.get('model_name') or 'ViT-B-32', key)


declare_input('cls_embeddings_path', kind='npy', rows='num_classes', fix=EMBEDDINGS_FIX,
              validate=embedding_width)
declare_input('clip_cfg.checkpoint', kind='checkpoint', fix=clip_checkpoint_fix)
declare_input('vocabulary', kind='text', fix='a text file with one class name per line')
declare_fix(r'^(.*/)?instances_(train|val)2017_ov_(base|all)\.json$',
            r'write it with `python tools/data/make_ov_splits.py coco --out-dir \1 '
            r'--ann \1instances_\g<2>2017.json`')
declare_fix(r'^(.*/)?lvis_v1_train_norare\.json$',
            r'write it with `python tools/data/make_ov_splits.py lvis --ann '
            r'\1lvis_v1_train.json --out-dir \1`')
