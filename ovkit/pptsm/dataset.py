"""Video list dataset for PaddleVideo/mmaction2 list files.

mmaction2's ``VideoDataset`` reads ``path label`` lines but needs the file suffix in the list
(PaddleVideo's UCF101 lists have none) and ignores a missing list file until a worker fails.
``PaddleVideoDataset`` adds the suffix when a line lacks it and fails early with the config key.
A video that cannot be decoded makes the pipeline raise (``PyAVOpen`` / ``PaddleVideoDecode``
name the file); ovkit.engine's shared mechanism (``default_hooks.bad_samples``,
docs/reliability.md) turns that into a counted skip: another video is drawn (train) or the
next one stands in and is left out of the metrics (val/test), and the count and the file names
are logged per epoch, summed over ranks.
"""
import os.path as osp

from mmaction.datasets import VideoDataset
from mmaction.registry import DATASETS

__all__ = ['PaddleVideoDataset']


@DATASETS.register_module()
class PaddleVideoDataset(VideoDataset):
    """``VideoDataset`` for list files with or without the video suffix.

    Args:
        ann_file: list file, one ``path label`` per line (paths relative to ``data_prefix``).
        pipeline: data pipeline.
        data_prefix: ``dict(video=root)``.
        suffix: appended to paths that do not already end with it (e.g. '.avi'); '' for none.
        **kwargs: other ``VideoDataset`` arguments.
    """

    def __init__(self, ann_file, pipeline, data_prefix=dict(video=''), suffix='', **kwargs):
        self.suffix = suffix
        if not osp.isfile(ann_file):
            raise FileNotFoundError(
                f'PaddleVideoDataset: list file {ann_file!r} (dataset.ann_file) does not '
                'exist. Set the ann_file config variable to your list ("path label" per '
                'line), see docs/pptsm.md.')
        super().__init__(ann_file, pipeline, data_prefix=data_prefix, **kwargs)

    def load_data_list(self):
        data_list = super().load_data_list()
        if not data_list:
            raise ValueError(f'PaddleVideoDataset: {self.ann_file} (dataset.ann_file) lists '
                             'no video.')
        if self.suffix:
            for info in data_list:
                if not info['filename'].endswith(self.suffix):
                    info['filename'] += self.suffix
        root = self.data_prefix.get('video') or ''
        if root and not osp.isdir(root):
            raise FileNotFoundError(
                f'PaddleVideoDataset: video folder {root!r} (dataset.data_prefix.video) does '
                f'not exist; it should hold the videos listed in {self.ann_file}.')
        return data_list
