"""Preflight: check every file a config reads before a Runner starts a process or loads data.

``tools/train.py`` and ``tools/test.py`` call :func:`run` after building the config;
``tools/dist_train.sh`` / ``dist_test.sh`` run it once, before torchrun
(``python -m ovkit.tools.preflight``), so a bad path is one message, not a traceback per rank.
Each problem is one line: the config key, the path, what is wrong (missing, unreadable, empty,
not JSON at line/column, no usable annotation, wrong row count, NaN, not a checkpoint) and the
fix. Written by hand: mmengine opens files only when it needs them, one rank at a time.

What is checked:

* every dataset of the loaders the run uses (``train_dataloader`` and, when validating,
  ``val_dataloader``; ``test_dataloader`` for tests), through wrappers (``dataset.dataset``,
  ``dataset.datasets``): ``data_root``, ``ann_file`` (JSON parsed; COCO files also through
  :func:`ovkit.engine.sanity.check_coco`), every ``data_prefix`` folder and, for COCO files, that
  the first images listed exist;
* the evaluators' ``ann_file``; ``load_from``, ``--resume``, the checkpoint of ``tools/test.py``
  and every ``init_cfg=dict(type='Pretrained', checkpoint=...)`` (structure and pickled
  globals, without loading the weights);
* the inputs each family declares with :func:`declare_input` (one line per key), e.g. BARON's
  class embeddings (``.npy``: readable, 2-D, one row per class, finite) and CLIP checkpoint.

A family adds a key in one line, in a module its ``__init__`` imports::

    declare_input('cls_embeddings_path', kind='npy', rows='num_classes',
                  fix='python tools/data/gen_class_embeddings.py --classes ... --out {path}')

and, optionally, how to make files whose path matches a pattern::

    declare_fix(r'_ov_(base|all)\\.json$', 'python tools/data/make_ov_splits.py coco ...')

"""
import os
import os.path as osp
import re
import sys
import time
from collections import namedtuple

from . import sanity
from .errors import UserError

__all__ = ['PreflightError', 'Problem', 'declare_input', 'declare_fix', 'declared_inputs',
           'check', 'run', 'check_path', 'checkpoint_problem', 'RESUME_LAST', 'RESUME_AUTO']

# ``--resume`` values: without a path it means the work dir's last checkpoint, which must exist;
# ``--resume auto`` resumes when there is one and starts from scratch otherwise.
RESUME_LAST = 'last'
RESUME_AUTO = 'auto'
KINDS = ('file', 'dir', 'json', 'npy', 'checkpoint', 'text')
IMAGES_SAMPLED = 20  # first images of a COCO file whose existence is checked


class Problem(namedtuple('Problem', 'key path what fix')):
    """One thing that stops the run: config key, path, what is wrong, how to fix it."""

    def __str__(self):
        path = f" = '{self.path}'" if self.path else ''
        fix = f' Fix: {self.fix}' if self.fix else ''
        return f'{self.key}{path}: {self.what}.{fix}'


class PreflightError(UserError):
    """The config names inputs that cannot work; the message has one line per problem.

    Args:
        problems: the :class:`Problem` list.
        config: the config file, for the first line.
    """

    collective = True  # every rank checks the same config and finds the same problems

    def __init__(self, problems, config=''):
        if isinstance(problems, str):  # rebuilt from its message (pickling, re-raising)
            self.problems = []
            super().__init__(problems)
            return
        self.problems = list(problems)
        lines = [str(p) for p in self.problems]
        if len(lines) == 1:
            text = lines[0]
        else:
            text = (f'{config or "the config"}: {len(lines)} problems stop the run:\n  '
                    + '\n  '.join(lines))
        super().__init__(text)


InputSpec = namedtuple('InputSpec', 'key kind fix rows validate root train_only family')
_INPUTS = {}  # (family, key) -> InputSpec
_FIXES = []


def declare_input(key, kind='file', fix='', rows=None, validate=None, root=None,
                  train_only=False):
    """Declare a config key that holds a path the family reads (call at import time).

    Args:
        key: the key, or the end of a dotted key (``'cls_embeddings_path'``,
            ``'clip_cfg.checkpoint'``); it matches at any depth of the config.
        kind: ``'file'``, ``'dir'``, ``'json'``, ``'npy'``, ``'checkpoint'`` or ``'text'``.
        fix: how to make or obtain the file; ``{path}`` and ``{key}`` are filled in (or a
            callable ``f(path, node, key) -> str``).
        rows: for ``'npy'``: a sibling key whose value is the expected number of rows.
        validate: optional ``f(path, node, cfg) -> str or None``, more checks by the family
            (``node`` is the dict holding the key, ``cfg`` the whole config as a dict).
        root: a sibling key naming the folder a relative path is under (as datasets read
            ``ann_file`` under ``data_root``), e.g. ``'data_root'``.
        train_only: checked for training only (read when training starts, e.g. weights a
            trained checkpoint already holds).
    """
    if kind not in KINDS:
        raise ValueError(f'declare_input({key!r}): kind must be one of {KINDS}, got {kind!r}')
    # Families may declare the same key (PP-TSM and ViT both read ``backbone.pretrained``, in
    # formats of their own): each declaration belongs to the family package that made it.
    caller = sys._getframe(1).f_globals.get('__name__', '')
    family = '.'.join(caller.split('.')[:2]) if caller.startswith('ovkit.') else caller
    _INPUTS[(family, key)] = InputSpec(key, kind, fix, rows, validate, root, train_only, family)


def declare_fix(pattern, fix):
    """Say how to make files whose path matches ``pattern`` (a regex searched in the path).

    Args:
        pattern: regular expression; its groups can be used in ``fix`` as ``\\1``.
        fix: the command or action, e.g. ``r'python tools/data/make_shapes.py --out \\1'``.
    """
    _FIXES.append((re.compile(pattern), fix))


def declared_inputs(families=None):
    """The declared keys: ``{key: InputSpec}``.

    Args:
        families: the family packages a config imports (``['ovkit.pptsm']``); a key declared by
            several families takes the declaration of one of these. ``None``: every family, the
            first declaration of a key winning.
    """
    out = {}
    for (family, key), spec in _INPUTS.items():
        if families and key in out and out[key].family not in families:
            out[key] = spec if family in families else out[key]
        elif key not in out:
            out[key] = spec
    return out


def config_families(cfg):
    """The ovkit family packages a config's ``custom_imports`` names (``'ovkit.sgg'``, ...)."""
    imports = (cfg.get('custom_imports') or {}).get('imports') or []
    if isinstance(imports, str):
        imports = [imports]
    return ['.'.join(name.split('.')[:2]) for name in imports
            if isinstance(name, str) and name.startswith('ovkit.')]


# The synthetic data every tiny config reads (ovkit.shapes, a shared package).
declare_fix(r'^(.*?shapes)(/|$)', r'generate it with `python tools/data/make_shapes.py --out \1`')


def _fix_for(path, default):
    for regex, fix in reversed(_FIXES):  # families' declarations win over the defaults
        match = regex.search(str(path))
        if match:
            return match.expand(fix)
    return default


def _is_remote(path):
    return '://' in str(path)


# --------------------------------------------------------------------------- single paths
def check_path(path, kind='file'):
    """What is wrong with ``path`` as an input of ``kind``, or None.

    Args:
        path: a local path.
        kind: ``'file'``, ``'dir'`` or one of the file kinds (``'json'``, ...).
    """
    if not osp.exists(path):
        parent = osp.dirname(osp.abspath(path))
        while parent and not osp.isdir(parent):
            parent = osp.dirname(parent)
        return f'not found (absolute path {osp.abspath(path)}; nearest existing folder {parent})'
    if kind == 'dir':
        if not osp.isdir(path):
            return 'is a file, not a folder'
        if not os.access(path, os.R_OK | os.X_OK):
            return 'folder not readable (permission denied)'
        if not os.listdir(path):
            return 'empty folder'
        return None
    if osp.isdir(path):
        return 'is a folder, not a file'
    if not os.access(path, os.R_OK):
        return 'not readable (permission denied)'
    if osp.getsize(path) == 0:
        return 'empty file (0 bytes)'
    return None


def _looks_like_text(head):
    try:
        text = head.decode('utf-8')
    except UnicodeDecodeError:
        return None
    printable = sum(ch.isprintable() or ch in '\r\n\t' for ch in text)
    return text if text and printable >= 0.95 * len(text) else None


def checkpoint_problem(path):
    """What makes ``path`` unusable as a torch checkpoint, or None; reads no weights.

    The container check is :func:`ovkit.engine.checkpoint.checkpoint_problem` (torch's zip
    format with its ``data.pkl``; a truncated file has lost the zip's central directory); on
    top, a text file is recognised as such, and pickled globals that weights-only loading
    refuses are listed (``torch.serialization.get_unsafe_globals_in_checkpoint``, which
    disassembles the pickle without running it).

    Args:
        path: a local file.
    """
    from .checkpoint import checkpoint_problem as container_problem
    problem = check_path(path, 'file') or container_problem(path)
    if problem and problem.startswith('not a torch checkpoint'):
        with open(path, 'rb') as f:
            text = _looks_like_text(f.read(256))
        if text is not None:
            first = text.strip().splitlines()[0][:60] if text.strip() else ''
            return f'a text file, not a checkpoint (it starts with {first!r})'
    if problem:
        return problem
    try:
        import torch

        import ovkit  # noqa: F401  (mmengine's checkpoint types are allowed, as when loading)
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:  # the scanner itself failed: the loader will fail the same way
        return f'unreadable checkpoint ({type(exc).__name__}: {str(exc)[:120]})'
    if unsafe:
        return (f'holds Python objects that safe (weights-only) loading refuses: '
                f'{", ".join(unsafe[:5])}; ovkit never runs code from a checkpoint')
    return None


def _check_npy(path, node, rows_key):
    import numpy as np
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:
        return f'not a readable .npy array ({type(exc).__name__}: {str(exc)[:100]})'
    if not isinstance(array, np.ndarray) or array.ndim != 2:
        return f'must hold a 2-D array [rows, dim], found shape {getattr(array, "shape", None)}'
    if rows_key and isinstance(node.get(rows_key), int) and array.shape[0] != node[rows_key]:
        return (f'has {array.shape[0]} rows but {rows_key}={node[rows_key]}; one row per class '
                'in the order of the class list')
    from .guards import non_finite_rows
    bad = non_finite_rows(array)
    if bad:
        return (f'holds NaN/inf in {len(bad)} of its {array.shape[0]} rows (first: row '
                f'{bad[0]})')
    return None


def _check_text(path):
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        return 'not UTF-8 text'
    if not any(line.strip() for line in text.splitlines()):
        return 'has no non-empty line'
    return None


def check_input(path, kind, node=None, rows=None):
    """What is wrong with ``path`` as an input of ``kind`` (file kinds read their content).

    Args:
        path: a local path.
        kind: one of :data:`KINDS`.
        node: the config dict holding the key (for ``rows``).
        rows: for ``'npy'``, the sibling key with the expected row count.
    """
    problem = check_path(path, 'dir' if kind == 'dir' else 'file')
    if problem or kind in ('file', 'dir'):
        return problem
    if kind == 'checkpoint':
        return checkpoint_problem(path)
    if kind == 'json':
        return sanity.load_json(path)[1]
    if kind == 'npy':
        return _check_npy(path, node or {}, rows)
    return _check_text(path)


# --------------------------------------------------------------------------- config walk
def _walk(node, key=''):
    """(dotted key, value, parent dict) for every value in a nested dict/list config."""
    if isinstance(node, dict):
        for k, v in node.items():
            child = f'{key}.{k}' if key else str(k)
            yield child, v, node
            yield from _walk(v, child)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _walk(v, f'{key}.{i}')


def _matches(key, declared):
    return key == declared or key.endswith('.' + declared)


def _leaf_datasets(node, key):
    """(key, dataset dict) for every dataset under a dataset config, through wrappers."""
    if not isinstance(node, dict):
        return
    inner = node.get('dataset')
    if isinstance(inner, dict):
        yield from _leaf_datasets(inner, f'{key}.dataset')
    for i, sub in enumerate(node.get('datasets') or []):
        yield from _leaf_datasets(sub, f'{key}.datasets.{i}')
    if any(k in node for k in ('ann_file', 'data_root', 'data_prefix')):
        yield key, node


def _join(root, path):
    if not root or osp.isabs(path) or _is_remote(path):
        return path
    return osp.join(root, path)


def _dataset_class(dataset_cfg, scope):
    """The registered class of a dataset config, or None when it cannot be resolved."""
    try:
        from mmengine.registry import DATASETS, DefaultScope
        dtype = dataset_cfg.get('type')
        if isinstance(dtype, str):
            with DefaultScope.overwrite_default_scope(scope):
                with DATASETS.switch_scope_and_registry(scope) as registry:
                    dtype = registry.get(dtype)
        return dtype if isinstance(dtype, type) else None
    except Exception:
        return None


def _is_coco_dataset(cls):
    try:
        from mmdet.datasets import CocoDataset
    except ImportError:
        return False
    return cls is not None and issubclass(cls, CocoDataset)


class _Checker:
    """Walks a config dict and collects :class:`Problem` s (one per key)."""

    def __init__(self, cfg, config_file):
        self.cfg = cfg
        self.config_file = config_file
        self.problems = []
        self.seen = {}  # absolute path -> usable? (one problem per file)
        self.missing = []  # absolute folders reported missing: what is under them is too
        self.checked = 0

    def add(self, key, path, what, fix):
        self.problems.append(Problem(key, path, what, fix))

    def override_fix(self, key, what='the path'):
        return (f'correct {what} in {self.config_file or "the config"} or override it: '
                f'--cfg-options {key}=...')

    def path(self, key, path, kind, fix=None, node=None, rows=None, validate=None):
        """Check one path; returns True when it is usable."""
        if not isinstance(path, str) or not path or _is_remote(path):
            return True
        absolute = osp.abspath(path)
        if absolute in self.seen:
            return self.seen[absolute]
        if any(absolute.startswith(folder + os.sep) for folder in self.missing):
            return False  # its folder is already reported missing: one message is enough
        self.checked += 1
        what = check_input(path, kind, node, rows)
        if what is None and validate is not None:
            what = validate(path, node, self.cfg)
        if what is not None:
            self.add(key, path, what, fix or _fix_for(path, self.override_fix(key)))
            if not osp.exists(path):
                self.missing.append(absolute)
        self.seen[absolute] = what is None
        return what is None

    # ------------------------------------------------------------------ datasets
    def datasets(self, loader_key, training):
        loader = self.cfg.get(loader_key)
        if not isinstance(loader, dict) or not isinstance(loader.get('dataset'), dict):
            return
        scope = self.cfg.get('default_scope')
        for key, ds in _leaf_datasets(loader['dataset'], f'{loader_key}.dataset'):
            root = ds.get('data_root') or ''
            if root and not self.path(f'{key}.data_root', root, 'dir'):
                continue  # everything relative to it would fail too: one message is enough
            prefixes = ds.get('data_prefix')
            prefix_paths = {}
            if isinstance(prefixes, str):
                prefixes = {'': prefixes}
            for name, value in (prefixes or {}).items():
                if isinstance(value, str) and value:
                    sub = f'{key}.data_prefix' + (f'.{name}' if name else '')
                    full = _join(root, value)
                    if self.path(sub, full, 'dir'):
                        prefix_paths[name] = (sub, full)
            ann = ds.get('ann_file')
            if not isinstance(ann, str) or not ann:
                continue
            full = _join(root, ann)
            kind = 'json' if ann.endswith('.json') else 'file'
            if not self.path(f'{key}.ann_file', full, kind) or kind != 'json':
                continue
            data, _ = sanity.load_json(full)
            cls = _dataset_class(ds, scope)
            if not sanity.is_coco_format(data):
                if _is_coco_dataset(cls):
                    self.add(f'{key}.ann_file', full, f'not a COCO annotation file ({cls.__name__} '
                             'needs a JSON object with "images", "annotations" and "categories" '
                             'lists)', _fix_for(full, 'pass the COCO-format annotation file'))
                continue
            classes = (ds.get('metainfo') or {}).get('classes') or getattr(
                cls, 'METAINFO', {}).get('classes')
            train_set = training and not ds.get('test_mode', False)
            report = sanity.check_coco(data, full, classes, training=train_set)
            fix = _fix_for(full, 'repair the file or regenerate it with the tool that wrote it')
            for text in report.errors:
                self.add(f'{key}.ann_file', full, text, fix)
            if not report.errors:
                img = prefix_paths.get('img') or prefix_paths.get('img_path')
                if img:
                    self.images(img, data, full)

    def images(self, prefix, data, ann_file):
        key, folder = prefix
        names = [im.get('file_name') for im in data.get('images', [])[:IMAGES_SAMPLED]
                 if isinstance(im, dict) and isinstance(im.get('file_name'), str)]
        if names and not any(osp.isfile(osp.join(folder, n)) for n in names):
            self.add(key, folder,
                     f'none of the first {len(names)} images listed in {ann_file} is there '
                     f'(e.g. {osp.join(folder, names[0])} not found)',
                     _fix_for(folder, self.override_fix(key, 'the image folder')))

    def evaluators(self, key):
        evaluator = self.cfg.get(key)
        items = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
        for i, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get('ann_file'), str):
                sub = f'{key}.{i}.ann_file' if isinstance(evaluator, (list, tuple)) else \
                    f'{key}.ann_file'
                ann = item['ann_file']
                self.path(sub, ann, 'json' if ann.endswith('.json') else 'file')

    # ------------------------------------------------------------------ weights, declared
    def pretrained(self):
        for key, value, parent in _walk(self.cfg.get('model') or {}, 'model'):
            if (key.endswith('.checkpoint') and isinstance(parent, dict)
                    and parent.get('type') == 'Pretrained' and isinstance(value, str)):
                self.path(key, value, 'checkpoint', fix=self.override_fix(
                    key, 'the checkpoint path (or set init_cfg=None to start from scratch)'))

    def declared(self, mode='train'):
        specs = {k: v for k, v in declared_inputs(config_families(self.cfg)).items()
                 if mode == 'train' or not v.train_only}
        for key, value, parent in _walk(self.cfg):
            if not isinstance(value, str):
                continue
            for name, spec in specs.items():
                if _matches(key, name):
                    if spec.root and isinstance(parent.get(spec.root), str):
                        value = _join(parent[spec.root], value)
                    fix = spec.fix
                    if callable(fix):
                        fix = fix(value, parent, key)
                    elif fix:
                        fix = fix.format(path=value, key=key)
                    self.path(key, value, spec.kind, fix=fix, node=parent, rows=spec.rows,
                              validate=spec.validate)
                    break

    def resume(self, resume, work_dir):
        last = osp.join(work_dir, 'last_checkpoint')
        if resume in (RESUME_LAST, RESUME_AUTO):
            if not osp.isfile(last):
                if resume == RESUME_LAST:
                    self.add('--resume', '', f'nothing to resume in the work dir {work_dir} (it '
                             'has no last_checkpoint file)',
                             'leave out --resume to start a new run, name a checkpoint '
                             '(--resume WORK_DIR/iter_N.pth), or use --resume auto to resume '
                             'only when a checkpoint exists')
                return
            with open(last) as f:
                named = f.read().strip()
            if not named:
                self.add('--resume', last, 'empty last_checkpoint file',
                         'name a checkpoint: --resume WORK_DIR/iter_N.pth')
                return
            self.path(f'--resume ({last})', named, 'checkpoint',
                      fix='name another checkpoint: --resume WORK_DIR/iter_N.pth')
        elif resume:
            self.path('--resume', resume, 'checkpoint',
                      fix='name a checkpoint written by tools/train.py (WORK_DIR/iter_N.pth)')


def check(cfg, mode='train', resume=None, checkpoint=None, config_file=''):
    """Collect every problem of the inputs ``cfg`` names (see the module docstring).

    Args:
        cfg: an mmengine ``Config`` (after ``--cfg-options``) or a plain dict.
        mode: ``'train'`` or ``'test'``.
        resume: train only: None, :data:`RESUME_LAST`, :data:`RESUME_AUTO` or a checkpoint.
        checkpoint: test only: the checkpoint to evaluate.
        config_file: the config's file name, for messages.

    Returns:
        tuple: (list of :class:`Problem`, number of paths checked).
    """
    raw = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    chk = _Checker(raw, config_file)
    if mode == 'train':
        chk.datasets('train_dataloader', training=True)
        if raw.get('val_cfg') and raw.get('val_dataloader') and raw.get('val_evaluator'):
            chk.datasets('val_dataloader', training=False)
            chk.evaluators('val_evaluator')
        if resume:
            chk.resume(resume, raw.get('work_dir') or '.')
        elif raw.get('load_from'):
            chk.path('load_from', raw['load_from'], 'checkpoint')
        chk.pretrained()
    elif mode == 'test':
        if checkpoint:
            chk.path('CHECKPOINT', checkpoint, 'checkpoint',
                     fix='pass a checkpoint written by tools/train.py (WORK_DIR/iter_N.pth)')
        chk.datasets('test_dataloader', training=False)
        chk.evaluators('test_evaluator')
    else:
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    chk.declared(mode)
    return chk.problems, chk.checked


def run(cfg, mode='train', resume=None, checkpoint=None, config_file='', logger=None):
    """:func:`check`, raising :class:`PreflightError` when anything is wrong.

    Args:
        cfg: the config.
        mode: ``'train'`` or ``'test'``.
        resume: see :func:`check`.
        checkpoint: see :func:`check`.
        config_file: the config's file name, for messages.
        logger: optional callable given a one-line summary on success.

    Returns:
        int: the number of paths checked.
    """
    start = time.perf_counter()
    problems, checked = check(cfg, mode, resume, checkpoint, config_file)
    if problems:
        raise PreflightError(problems, config_file)
    if logger is not None:
        logger(f'preflight: {checked} inputs of {config_file or "the config"} checked in '
               f'{time.perf_counter() - start:.1f}s')
    return checked
