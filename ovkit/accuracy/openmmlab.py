"""Dump an OpenMMLab model built from ``CONFIG [CKPT]`` on one image, video or saved tensor.

The input goes through the config's own test pipeline (annotation loading removed: a bare
file has none) and the model's ``data_preprocessor``, once, in float32 on the CPU. The
preprocessed batch is the model input (``__input__``) of every setting, so settings differ
only in the forward pass; ``data_preprocessor`` is not hooked. ``mode``:

* ``predict`` (default): ``model(inputs, data_samples, mode='predict')``; the results'
  ``pred_*`` tensors (e.g. ``pred_instances.bboxes/scores/labels``) are the model outputs.
* ``tensor``: ``mode='tensor'`` (raw head outputs).
* ``feat``: ``model.extract_feat(inputs)`` (backbone + neck): what exports to ONNX for
  detectors whose heads use custom ops (the default with the onnx setting). Dump the
  reference with the same ``--mode``; the comparison warns when the modes differ.
"""
import contextlib
import importlib
import os.path as osp
import random

import numpy as np
import torch

from .capture import parse_setting, to_device
from .dump import dump_module
from .manifest import AccuracyError

IMAGE_EXT = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
VIDEO_EXT = ('.mp4', '.avi', '.mkv', '.mov', '.webm', '.mpg', '.mpeg', '.flv')
TENSOR_EXT = ('.npy', '.pt', '.pth')
MODES = ('predict', 'tensor', 'feat')
_DROP_TRANSFORMS = ('LoadAnnotations', 'LoadPanopticAnnotations', 'LoadTrackAnnotations',
                    'LoadProposals')


def load_config(config, cfg_options=None):
    """A config from a file, or from an installed toolbox as ``mmaction::path/in/configs.py``.

    Args:
        config: file path, or ``package::relative/config.py`` (mmdet, mmaction, mmpretrain).
        cfg_options: dict of overrides (``--cfg-options``).
    """
    from mmengine.config import Config
    if osp.isfile(config):
        cfg = Config.fromfile(config)
    elif '::' in config:
        from mmengine.hub import get_config
        try:
            cfg = get_config(config, pretrained=False)
        except Exception as e:
            raise AccuracyError(f'config {config}: not found in the installed package '
                                f'({type(e).__name__}: {e}); check the name against the '
                                "package's configs/ folder, e.g. "
                                'mmpretrain::resnet/resnet18_8xb32_in1k.py') from e
    else:
        raise AccuracyError(f'config {config} not found; pass a config file such as '
                            'configs/shapes/faster_rcnn_tiny.py, or a packaged one such as '
                            'mmpretrain::resnet/resnet18_8xb32_in1k.py')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def init_scope(cfg):
    """Import ``custom_imports`` and register the host toolbox; returns its scope name."""
    from mmengine.utils import import_modules_from_strings
    if cfg.get('custom_imports'):
        import_modules_from_strings(**cfg['custom_imports'])
    scope = cfg.get('default_scope', None)
    if scope:
        try:
            importlib.import_module(f'{scope}.utils').register_all_modules(False)
        except (ImportError, AttributeError):
            pass
    return scope


@contextlib.contextmanager
def host_scope(cfg):
    """The config's ``default_scope`` for the duration of the block only.

    mmdet, mmaction2 and mmpretrain share type names (``ResNet``, ``PackInputs``...); a
    process-wide default scope would leak from one config to the next (tests, notebooks).
    """
    from mmengine.registry import DefaultScope
    scope = init_scope(cfg)
    with DefaultScope.overwrite_default_scope(scope):
        yield scope


def build_model(config, checkpoint=None, cfg_options=None, seed=0):
    """(model, cfg): the config's model in eval mode on the CPU, weights from ``checkpoint``.

    Without a checkpoint the weights are PyTorch's default initialisation under ``seed``
    (``init_weights`` is not called: it may download pretrained weights), so two processes
    build the same model.
    """
    cfg = load_config(config, cfg_options) if isinstance(config, str) else config
    with host_scope(cfg) as scope:
        registry = (importlib.import_module(f'{scope}.registry').MODELS if scope else None)
        if registry is None:
            from mmengine.registry import MODELS as registry
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            model = registry.build(cfg.model)
        except Exception as e:
            raise AccuracyError(f'building the model of {getattr(cfg, "filename", config)} '
                                f'failed: {type(e).__name__}: {e}') from e
    if checkpoint and checkpoint.lower() != 'none':
        if not osp.isfile(checkpoint):
            raise AccuracyError(f'checkpoint {checkpoint} not found; pass a .pth written by '
                                'tools/train.py, or "none" for random weights')
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    return model.eval(), cfg


def _test_pipeline(cfg):
    for key in ('test_dataloader', 'val_dataloader'):
        ds = cfg.get(key, {}).get('dataset') if cfg.get(key) else None
        while ds is not None and 'pipeline' not in ds and 'dataset' in ds:
            ds = ds['dataset']  # dataset wrappers (RepeatDataset, ClassBalancedDataset...)
        if ds is not None and ds.get('pipeline'):
            return list(ds['pipeline'])
    if cfg.get('test_pipeline'):
        return list(cfg['test_pipeline'])
    raise AccuracyError(f'{cfg.filename} has no test pipeline (test_dataloader.dataset.pipeline '
                        'or test_pipeline); pass a preprocessed tensor with --input x.npy')


def _load_tensor(path):
    if path.endswith('.npy'):
        try:
            x = torch.from_numpy(np.load(path, allow_pickle=False))
        except ValueError as e:
            raise AccuracyError(f'--input {path} is not a readable .npy file ({e})') from e
    else:
        try:
            x = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:
            raise AccuracyError(f'--input {path} could not be loaded with torch.load ({e}); '
                                'save a tensor with torch.save(x, path)') from e
        if isinstance(x, dict) and 'inputs' in x:
            x = x['inputs']
    if not isinstance(x, torch.Tensor):
        raise AccuracyError(f'--input {path} holds {type(x).__name__}, expected one tensor '
                            '(the preprocessed batch, e.g. N x 3 x H x W)')
    return x.float() if x.is_floating_point() else x


def _synthetic_samples(scope, x):
    """Data samples for a preprocessed tensor input (mmdet needs image shapes in predict)."""
    if scope != 'mmdet' or x.dim() != 4:
        return None
    from mmdet.structures import DetDataSample
    h, w = x.shape[-2:]
    samples = []
    for i in range(x.shape[0]):
        s = DetDataSample()
        s.set_metainfo(dict(img_id=i, img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                            batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        samples.append(s)
    return samples


def prepare_inputs(model, cfg, input_file):
    """(inputs tensor, data samples or None, description) for one input file."""
    if not osp.isfile(input_file):
        raise AccuracyError(f'--input {input_file} not found; pass an image, a video or a '
                            'saved tensor (.npy / .pt)')
    ext = osp.splitext(input_file)[1].lower()
    scope = cfg.get('default_scope', None)
    if ext in TENSOR_EXT:
        x = _load_tensor(input_file)
        return x, _synthetic_samples(scope, x), dict(kind='tensor', file=input_file)
    if ext not in IMAGE_EXT + VIDEO_EXT:
        raise AccuracyError(f'--input {input_file}: unknown extension {ext!r}; images '
                            f'{IMAGE_EXT}, videos {VIDEO_EXT}, tensors {TENSOR_EXT}')
    from mmengine.dataset import Compose, pseudo_collate
    steps = [t for t in _test_pipeline(cfg)
             if str(t.get('type', '')).split('.')[-1] not in _DROP_TRANSFORMS]
    try:
        with host_scope(cfg):
            pipeline = Compose(steps)
        path = osp.abspath(input_file)
        data = pipeline(dict(img_path=path, filename=path, img_id=0, label=-1, start_index=0,
                             modality='RGB'))
    except Exception as e:
        raise AccuracyError(f'the test pipeline of {cfg.filename} failed on {input_file}: '
                            f'{type(e).__name__}: {e}') from e
    if data is None:
        raise AccuracyError(f'the test pipeline of {cfg.filename} dropped {input_file}')
    with torch.no_grad():
        batch = model.data_preprocessor(pseudo_collate([data]), False)
    return batch['inputs'], batch.get('data_samples'), dict(kind='pipeline', file=input_file)


def make_forward(samples, mode):
    """``forward(model, inputs)`` for :func:`~.dump.dump_module`; samples follow the device."""
    if mode not in MODES:
        raise AccuracyError(f'--mode {mode!r}: choose one of {", ".join(MODES)}')
    if mode == 'feat':
        return lambda m, x: m.extract_feat(x)
    return lambda m, x: m(x, to_device(samples, x.device), mode=mode)


def default_mode(model, settings):
    """``predict``, unless a setting is onnx: then ``feat`` where the model has
    ``extract_feat`` (detector heads call mmcv ops that do not export), else ``tensor``."""
    if any(s.backend == 'onnxruntime' for s in settings):
        return 'feat' if hasattr(model, 'extract_feat') else 'tensor'
    return 'predict'


def dump_config(config, checkpoint, input_file, out_dir, setting='fp32', mode=None,
                cfg_options=None, seed=0, model=None, prepared=None, **kwargs):
    """Build (or reuse ``model``), preprocess ``input_file`` and dump under ``setting``.

    ``mode`` defaults to :func:`default_mode` (``predict``; ``feat`` or ``tensor`` for onnx).
    ``prepared`` (inputs, samples, info) reuses one preprocessing across settings. Other keyword
    arguments go to :func:`~.dump.dump_module`.
    """
    s = parse_setting(setting)
    if model is None:
        model, cfg = build_model(config, checkpoint, cfg_options, seed)
    else:
        cfg = load_config(config, cfg_options) if isinstance(config, str) else config
    if mode is None:
        mode = default_mode(model, [s])
    if s.backend == 'onnxruntime' and mode == 'predict':
        raise AccuracyError('--mode predict returns data samples, which ONNX cannot '
                            'represent; use --mode tensor or --mode feat with the onnx setting')
    inputs, samples, info = prepared or prepare_inputs(model, cfg, input_file)
    meta = dict(config=getattr(cfg, 'filename', str(config)), checkpoint=checkpoint,
                input=info, mode=mode)
    with host_scope(cfg):
        return dump_module(model, inputs, out_dir, s, forward=make_forward(samples, mode),
                           skip=('data_preprocessor',), seed=seed, meta=meta, **kwargs)
