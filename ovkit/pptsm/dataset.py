"""Video list dataset for PaddleVideo/mmaction2 list files.

mmaction2's ``VideoDataset`` reads ``path label`` lines but needs the file suffix in the list
(PaddleVideo's UCF101 lists have none), ignores a missing list file until a worker fails, stops
at a malformed line with a bare unpacking error and never compares the labels with the model's
class count (a label >= ``num_classes`` fails mid-training inside ``MixupBlending``'s one-hot).
``PaddleVideoDataset`` adds the suffix when a line lacks it and fails at build time naming the
file, the line and the config key.

A video that cannot be decoded makes the pipeline raise (``PyAVOpen`` / ``PyAVDecodeSampled``
name the file); ovkit.engine's shared mechanism (``default_hooks.bad_samples``,
docs/reliability.md) turns that into a counted skip: another video is drawn (train) or the
next one stands in and is left out of the metrics (val/test), and the count and the file names
are logged per epoch, summed over ranks.
"""
import os.path as osp

from mmaction.datasets import VideoDataset
from mmaction.registry import DATASETS
from mmengine.fileio import list_from_file

__all__ = ['PaddleVideoDataset']


@DATASETS.register_module()
class PaddleVideoDataset(VideoDataset):
    """``VideoDataset`` for list files with or without the video suffix, checked at build.

    Args:
        ann_file: list file, one ``path label`` per line (paths relative to ``data_prefix``).
        pipeline: data pipeline.
        data_prefix: ``dict(video=root)``.
        suffix: appended to paths that do not already end with it (e.g. '.avi'); '' for none.
        num_classes: the model's class count (``model.cls_head.num_classes``); every label
            must lie in ``[0, num_classes)``. None skips the check.
        **kwargs: other ``VideoDataset`` arguments.
    """

    def __init__(self, ann_file, pipeline, data_prefix=dict(video=''), suffix='',
                 num_classes=None, **kwargs):
        self.suffix = suffix
        if not osp.isfile(ann_file):
            raise FileNotFoundError(
                f'PaddleVideoDataset: list file {ann_file!r} (dataset.ann_file) does not '
                'exist. Set DATA_ROOT or the ann_file key to your list ("path label" per '
                'line), see docs/pptsm.md.')
        super().__init__(ann_file, pipeline, data_prefix=data_prefix, num_classes=num_classes,
                         **kwargs)

    def _parse(self, number, line):
        """``dict(filename, label)`` of one list line, or a ValueError naming the line."""
        where = f'PaddleVideoDataset: {self.ann_file} (dataset.ann_file) line {number}'
        parts = line.split(self.delimiter)
        if self.multi_class:  # "path label label ..."
            name, labels = parts[0], parts[1:]
        elif len(parts) == 1:  # a path alone (inference lists)
            name, labels = parts[0], []
        else:  # "path label"; the path may hold the delimiter
            name, labels = self.delimiter.join(parts[:-1]), parts[-1:]
        if not name or (self.multi_class and not labels):
            raise ValueError(f'{where}: {line!r} is not "path label".')
        try:
            values = [int(v) for v in labels]
        except ValueError:
            raise ValueError(f'{where}: label {labels[-1]!r} of {line!r} is not an integer '
                             'class index.') from None
        if not values and not self.test_mode:
            raise ValueError(f'{where}: {line!r} has no label (a training list needs '
                             '"path label").')
        for value in values:
            if self.num_classes is not None and not 0 <= value < self.num_classes:
                raise ValueError(
                    f'{where}: label {value} of {line!r} is not in 0..{self.num_classes - 1}: '
                    f'the config has num_classes={self.num_classes} '
                    '(model.cls_head.num_classes, also model.data_preprocessor.blending.'
                    'num_classes and the datasets\' num_classes). Set num_classes to the '
                    'number of classes of the list, or fix the line.')
        label = values if self.multi_class else (values[0] if values else -1)
        return dict(filename=name, label=label)

    def load_data_list(self):
        data_list = []
        for number, line in enumerate(list_from_file(self.ann_file), 1):
            if line.strip():
                data_list.append(self._parse(number, line.strip()))
        if not data_list:
            raise ValueError(f'PaddleVideoDataset: {self.ann_file} (dataset.ann_file) lists '
                             'no video.')
        root = self.data_prefix.get('video') or ''
        if root and not osp.isdir(root):
            raise FileNotFoundError(
                f'PaddleVideoDataset: video folder {root!r} (dataset.data_prefix.video) does '
                f'not exist; it should hold the videos listed in {self.ann_file}.')
        for info in data_list:
            if self.suffix and not info['filename'].endswith(self.suffix):
                info['filename'] += self.suffix
            if root:
                info['filename'] = osp.join(root, info['filename'])
        return data_list
