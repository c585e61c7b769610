"""Dump directory layout: file names, ``manifest.json``, and reading a dump back.

numpy only: the comparison side (this, metrics, compare) uses no torch, so a comparison
worker stays small.

A dump directory holds one ``.npy`` per tensor, named
``{module_name}.{output_index}.{timestamp}.npy`` (module inputs:
``{module_name}.input.{input_index}.{timestamp}.npy``; the model's own inputs and outputs use
the pseudo module names ``__input__`` and ``__output__``), plus ``manifest.json`` with the
execution order, shapes, dtypes and the setting. A directory of ``.npy`` files that follow
the naming but has no manifest (e.g. written by another tool) is read too: order comes from
the timestamps. Isolated outputs (a module of this setting run on the reference's recorded
inputs, see :mod:`.dump`) are ``{module_name}.isolated.{output_index}.{timestamp}.npy``.
"""
import json
import os
import os.path as osp
import re
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from .common import tensor_label

MANIFEST = 'manifest.json'
FORMAT = 'ovkit.accuracy.dump'
FORMAT_VERSION = 1
MODEL_INPUT = '__input__'
MODEL_OUTPUT = '__output__'
KINDS = ('model_input', 'input', 'output', 'isolated', 'model_output')
_NAME_RE = re.compile(
    r'^(?P<name>.+?)(?:\.(?P<kind>input|isolated))?\.(?P<index>\d+)\.(?P<ts>\d+)\.npy$')
_UNSAFE = re.compile(r'[^A-Za-z0-9_.\-]')


class AccuracyError(Exception):
    """A user-facing problem with a dump, a report or an argument; the message says the fix."""


@dataclass
class TensorEntry:
    """One saved tensor. ``key`` (name, kind, call, index) is what two dumps are matched on."""
    name: str
    kind: str = 'output'
    index: int = 0
    call: int = 0
    file: str = ''
    shape: list = field(default_factory=list)
    dtype: str = ''
    path: str = ''
    module_type: str = ''
    order: int = 0

    @property
    def key(self):
        return (self.name, self.kind, self.call, self.index)

    @property
    def label(self):
        """Short human name: ``backbone.conv1#1[0]`` (call shown only when > 0)."""
        return tensor_label(self.name, self.kind, self.call, self.index)


@dataclass
class Dump:
    """A dump directory read back: its entries in execution order and its metadata."""
    root: str
    entries: list
    meta: dict

    @property
    def setting(self):
        return self.meta.get('setting', {}).get('name', osp.basename(osp.normpath(self.root)))

    def file_path(self, entry):
        return osp.join(self.root, entry.file)


def safe_name(name):
    """Module name as a file-name component (ModuleDict keys may hold '/' or spaces)."""
    return _UNSAFE.sub('_', name) or '_'


def tensor_file_name(name, kind, index, timestamp):
    if kind in ('input', 'isolated'):
        return f'{safe_name(name)}.{kind}.{index}.{timestamp}.npy'
    return f'{safe_name(name)}.{index}.{timestamp}.npy'


class Timestamps:
    """Strictly increasing microsecond stamps, so file names alone still sort by execution."""

    def __init__(self):
        self.last = 0

    def __call__(self):
        now = time.time_ns() // 1000
        self.last = now if now > self.last else self.last + 1
        return self.last


def write_manifest(root, entries, meta):
    data = dict(format=FORMAT, version=FORMAT_VERSION, **meta,
                tensors=[asdict(e) for e in entries])
    tmp = osp.join(root, MANIFEST + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, osp.join(root, MANIFEST))


def prepare_out_dir(root, overwrite=False):
    """Create ``root``; refuse to mix two dumps in one directory unless ``overwrite``.

    Mixing would silently match tensors of different runs, so an existing dump is either an
    error or removed (only the files it lists and ``*.npy``; nothing else is touched).
    """
    os.makedirs(root, exist_ok=True)
    old_npy = [f for f in os.listdir(root) if f.endswith('.npy')]
    has_manifest = osp.exists(osp.join(root, MANIFEST))
    if not (old_npy or has_manifest):
        return
    if not overwrite:
        raise AccuracyError(
            f'{root} already holds a dump ({len(old_npy)} .npy files). Pass --overwrite '
            '(overwrite=True) to replace it, or choose another --out directory.')
    for f in old_npy:
        os.remove(osp.join(root, f))
    if has_manifest:
        os.remove(osp.join(root, MANIFEST))


def _kind_from_name(name, kind=None):
    if name == MODEL_INPUT:
        return 'model_input'
    if name == MODEL_OUTPUT:
        return 'model_output'
    return kind or 'output'


def _entries_from_files(root, files):
    """Entries of a manifest-less dump, ordered by the timestamp in each file name."""
    parsed, odd = [], []
    for f in files:
        m = _NAME_RE.match(f)
        if m:
            parsed.append((int(m['ts']), m['name'], m['kind'], int(m['index']), f))
        else:
            odd.append(f)
    if odd and not parsed:
        raise AccuracyError(
            f'{root}: no manifest.json and no .npy file follows the naming '
            f'"{{module_name}}.{{output_index}}.{{timestamp}}.npy" (e.g. {odd[0]}). Re-dump with '
            'tools/analysis/compare_accuracy.py dump, or rename the files.')
    parsed.sort()
    calls, entries = {}, []
    for ts, name, kind, index, f in parsed:
        kind = _kind_from_name(name, kind)
        call = calls.get((name, kind, index), 0)
        calls[(name, kind, index)] = call + 1
        entries.append(TensorEntry(name=name, kind=kind, index=index, call=call, file=f,
                                   order=len(entries)))
    # files that do not follow the naming still take part, after the rest, by name
    for f in sorted(odd):
        entries.append(TensorEntry(name=f[:-4], file=f, order=len(entries)))
    for e in entries:
        try:
            shape, dtype = read_npy_header(osp.join(root, e.file))
            e.shape, e.dtype = list(shape), str(dtype)
        except AccuracyError:
            pass  # reported per tensor by the comparison
    return entries


def load_dump(root):
    """Read a dump directory. Raises :class:`AccuracyError` naming the directory and the fix."""
    if not osp.exists(root):
        raise AccuracyError(
            f'dump directory {root} does not exist. Create it with '
            f'`tools/analysis/compare_accuracy.py dump CONFIG CKPT --input FILE --out {root}` '
            '(or ovkit.accuracy.dump_module), or check the path.')
    if not osp.isdir(root):
        raise AccuracyError(f'{root} is a file, not a dump directory; pass the directory that '
                            'holds manifest.json and the .npy files.')
    files = sorted(f for f in os.listdir(root) if f.endswith('.npy'))
    manifest = osp.join(root, MANIFEST)
    if not osp.exists(manifest):
        if not files:
            raise AccuracyError(
                f'dump directory {root} is empty (no manifest.json, no .npy files). The dump '
                'did not run or wrote elsewhere; re-run `compare_accuracy.py dump ... --out '
                f'{root}`.')
        return Dump(root, _entries_from_files(root, files), dict(setting=dict(
            name=osp.basename(osp.normpath(root))), source='file names'))
    try:
        with open(manifest) as f:
            data = json.load(f)
        if data.get('format') != FORMAT:
            raise ValueError(f'format is {data.get("format")!r}, expected {FORMAT!r}')
        tensors = data.pop('tensors')
        entries = [TensorEntry(**t) for t in tensors]
    except (ValueError, KeyError, TypeError) as e:
        raise AccuracyError(
            f'{manifest} is not a valid ovkit dump manifest ({e}). Re-run the dump, or delete '
            'manifest.json to fall back to the order given by the .npy file names.') from e
    if not entries:
        raise AccuracyError(
            f'dump {root} lists no tensors: no hooked module ran. Check that the model has '
            'leaf modules, and that --include/--exclude do not filter out every module.')
    entries.sort(key=lambda e: e.order)
    return Dump(root, entries, data)


def read_npy_header(path):
    """(shape, dtype) from a .npy header without reading the data; AccuracyError if corrupt."""
    try:
        with open(path, 'rb') as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    except FileNotFoundError as e:
        raise AccuracyError(f'{path} is missing; the dump is incomplete, re-run it.') from e
    except (ValueError, OSError, EOFError) as e:
        raise AccuracyError(f'{path} is not a readable .npy file ({e}); re-run the dump that '
                            'wrote it, or delete the file.') from e
    return shape, dtype


def open_npy(path):
    """Memory-map a .npy (small or empty files are read plainly).

    Raises AccuracyError for a missing, corrupt, truncated or object-dtype file, so the caller
    can turn it into a row with a reason.
    """
    shape, dtype = read_npy_header(path)
    if dtype.hasobject:
        raise AccuracyError(f'{path} holds Python objects, not numbers; dump tensors only.')
    try:
        arr = np.load(path, mmap_mode='r', allow_pickle=False)
    except ValueError as e:  # truncated data: 'mmap length is greater than file size'
        raise AccuracyError(f'{path} is truncated or corrupt ({e}); re-run the dump that '
                            'wrote it.') from e
    return arr


class DumpWriter:
    """Writes one dump directory: ``add`` saves a tensor at once, ``close`` the manifest.

    Saving at once (not at the end) keeps memory at one tensor, and captures a value before
    a later in-place op (``ReLU(inplace=True)``) changes it.
    """

    def __init__(self, root, overwrite=False):
        prepare_out_dir(root, overwrite)
        self.root = root
        self.entries = []
        self._stamp = Timestamps()
        self._calls = {}

    def next_call(self, name, kind='output', index=0):
        """Call number the next :meth:`add` of this (name, kind, index) gets by default."""
        return self._calls.get((name, kind, index), 0)

    def add(self, name, array, kind='output', index=0, dtype=None, path='', module_type='',
            call=None):
        """Save ``array`` (numpy) as the next tensor in execution order; returns its entry.

        ``dtype`` records the original dtype when the saved one differs (bfloat16 is saved as
        float32, which numpy can hold exactly).
        """
        if kind not in KINDS:
            raise ValueError(f'kind must be one of {KINDS}, not {kind!r}')
        if call is None:
            call = self._calls.get((name, kind, index), 0)
        self._calls[(name, kind, index)] = call + 1
        array = np.asarray(array)  # not ascontiguousarray: it turns a 0-d tensor into 1-d
        fname = tensor_file_name(name, kind, index, self._stamp())
        np.save(osp.join(self.root, fname), array, allow_pickle=False)
        entry = TensorEntry(name=name, kind=kind, index=index, call=call, file=fname,
                            shape=list(array.shape), dtype=dtype or str(array.dtype),
                            path=path, module_type=module_type, order=len(self.entries))
        self.entries.append(entry)
        return entry

    def close(self, **meta):
        meta.setdefault('created', time.strftime('%Y-%m-%dT%H:%M:%S'))
        write_manifest(self.root, self.entries, meta)
        return osp.join(self.root, MANIFEST)


def save_arrays(root, arrays, setting='custom', overwrite=False, **meta):
    """Write a dump from numpy arrays, e.g. outputs of another framework to compare against.

    ``arrays``: ordered mapping (or list of pairs) of module name -> array or list of arrays
    (one per output index), in execution order. The names ``__input__`` / ``__output__`` mark
    the model's inputs and outputs.
    """
    writer = DumpWriter(root, overwrite)
    items = arrays.items() if hasattr(arrays, 'items') else arrays
    for name, value in items:
        values = value if isinstance(value, (list, tuple)) else [value]
        kind = _kind_from_name(name)
        for i, v in enumerate(values):
            writer.add(name, np.asarray(v), kind=kind, index=i)
    return writer.close(setting=dict(name=setting, backend='numpy'), **meta)
