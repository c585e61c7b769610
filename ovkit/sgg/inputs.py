"""The files scene-graph configs read, declared for the preflight (:mod:`ovkit.engine.preflight`).

``tools/train.py``, ``tools/test.py`` and the ``dist_*.sh`` launchers check them once, before
any process starts or data is loaded: a missing or unusable file is one ``error:`` line naming
the config key, the path and how to obtain the file. The dataset's ``data_root``,
``data_prefix.img`` and ``ann_file`` (the h5) are checked by the preflight's dataset walk; this
module adds VGSGGDataset's ``dict_file`` / ``image_file`` (under ``data_root``), the first
images of ``image_data.json``, the GloVe folder, the detector checkpoint and the zero-shot
triplets. Keys are matched where the code reads them (``*.dataset.dict_file``,
``model.detector_checkpoint``, ...), not the configs' top-level variables, so an override
with ``--cfg-options`` is what gets checked.
"""
import json
import os.path as osp
import re

from ovkit.engine.preflight import declare_fix, declare_input

from .dataset import CORRUPTED_IMAGES, WHERE
from .glove import GLOVE_URL, glove_file
from .metric import ZEROSHOT_WHERE

IMAGES_SAMPLED = 20  # first images of image_data.json whose files must exist
TINY_DETECTOR = 'faster-rcnn_r18-fpn-tiny_shapes-vg150'
SGB_DETECTOR = ('SGB publishes its VG150 detector as pretrained_faster_rcnn/model_final.pth '
                '(README.md of KaihuaTang/Scene-Graph-Benchmark.pytorch, "Pretrained Models")')


def _image_folder(node):
    root = node.get('data_root') or ''
    prefix = node.get('data_prefix')
    img = prefix.get('img', 'VG_100K') if isinstance(prefix, dict) else 'VG_100K'
    return img if not root or osp.isabs(img) else osp.join(root, img)


def check_image_file(path, node, cfg):
    """``image_data.json`` lists {image_id, width, height}; its first images must exist.

    The full count of missing images is the dataset's check (``check_images``) when it loads.

    Args:
        path: the json (already parsed once by the preflight).
        node: the dataset config dict.
        cfg: the whole config dict.
    """
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, list) or not data or not all(
            isinstance(d, dict) and {'image_id', 'width', 'height'} <= set(d) for d in data[:50]):
        return ('is not an image_data.json: expected a non-empty list of {"image_id", "width", '
                '"height"} objects in the h5\'s image order')
    folder = _image_folder(node)
    if not osp.isdir(folder):
        return None  # the dataset walk reports the folder (data_prefix.img)
    names = [f"{d['image_id']}.jpg" for d in data[:IMAGES_SAMPLED + len(CORRUPTED_IMAGES)]
             if f"{d['image_id']}.jpg" not in CORRUPTED_IMAGES][:IMAGES_SAMPLED]
    if not any(osp.isfile(osp.join(folder, n)) for n in names):
        return (f'none of the first {len(names)} images it lists is in the image folder '
                f'{folder} (e.g. {osp.join(folder, names[0])} not found): {WHERE["img"]}')
    return None


def check_dict_file(path, node, cfg):
    """``VG-SGG-dicts-with-attri.json`` must hold the class and predicate indices."""
    with open(path) as f:
        data = json.load(f)
    missing = [k for k in ('label_to_idx', 'predicate_to_idx')
               if not isinstance(data, dict) or not isinstance(data.get(k), dict)]
    if missing:
        return (f'has no {" / ".join(missing)} mapping: not SGB\'s VG-SGG-dicts-with-attri.json')
    return None


def check_glove_dir(path, node, cfg):
    """The GloVe folder must hold ``glove.6B.<embed_dim>d.txt``."""
    dim = node.get('embed_dim', 200)
    if not osp.isfile(glove_file(path, dim)):
        return f'has no glove.6B.{dim}d.txt (the predictor\'s embed_dim is {dim})'
    return None


def detector_fix(path, node, key):
    if TINY_DETECTOR in str(path):
        return (f'train the tiny detector first: tools/dist_train.sh configs/sgg/{TINY_DETECTOR}'
                f'.py 2 (it writes {path}), or --cfg-options {key}=<its checkpoint>')
    return (f'{SGB_DETECTOR}; convert it with `python tools/model_converters/sgb_detector.py '
            f'model_final.pth {path}`, or --cfg-options {key}=<a converted checkpoint>')


GLOVE_FIX = (f'download glove.6B.zip (GloVe 6B) from {GLOVE_URL} and unzip glove.6B.200d.txt '
             'into {path}, or --cfg-options {key}=<the folder holding it>')

declare_input('dataset.dict_file', kind='json', root='data_root', validate=check_dict_file)
declare_input('dataset.image_file', kind='json', root='data_root', validate=check_image_file)
# read when training starts (init_weights); a trained checkpoint holds what came from them
declare_input('predictor.glove_dir', kind='dir', fix=GLOVE_FIX, validate=check_glove_dir,
              train_only=True)
declare_input('model.detector_checkpoint', kind='checkpoint', fix=detector_fix, train_only=True)


def zeroshot_fix(path, node, key):
    shapes = re.match(r'^(.*?shapes)/vg150/', str(path))
    if shapes:
        return (f'generate it with `python tools/data/make_shapes.py --out {shapes.group(1)} '
                '--kinds vg150`')
    return f'{ZEROSHOT_WHERE}; or --cfg-options {key}=None to leave out zR@K'


for _loop in ('val', 'test'):
    declare_input(f'{_loop}_evaluator.zeroshot_triplets', kind='file', fix=zeroshot_fix)

# how to obtain each VG150 file (the general ones first: later declarations win)
_SEE = '; docs/sgg.md ("Data: VG150") lists every file'
declare_fix(r'(^|/)vg/?$', 'put the VG150 files there (docs/sgg.md, "Data: VG150") or set '
            'data_root with --cfg-options')
declare_fix(r'VG-SGG-with-attri\.h5$', WHERE['ann_file'] + _SEE)
declare_fix(r'VG-SGG-dicts-with-attri\.json$', WHERE['dict_file'] + _SEE)
declare_fix(r'image_data\.json$', WHERE['image_file'] + _SEE)
declare_fix(r'VG_100K/?$', WHERE['img'] + _SEE)
declare_fix(r'^(.*?shapes)/vg150(/|$)',
            r'generate it with `python tools/data/make_shapes.py --out \1 --kinds vg150`')
