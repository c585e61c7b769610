"""Video list dataset for PaddleVideo/mmaction2 list files, with counted skips of bad videos.

mmaction2's ``VideoDataset`` reads ``path label`` lines but needs the file suffix in the list
(PaddleVideo's UCF101 lists have none), ignores a missing list file until a worker fails, and a
video that fails to decode stops the run. ``PaddleVideoDataset`` adds the suffix when a line
lacks it, fails early with the config key, and turns a sample whose pipeline raises into a
counted skip: another video is drawn (train) or the next one taken (val/test), a warning names
the file, and ``VideoSkipLoggerHook`` logs the count per epoch (summed over ranks).

The skip counting is deliberately small and kept in this one file, so that a shared
robustness mechanism can replace it.
"""
import os.path as osp

import numpy as np
import torch
from mmaction.datasets import VideoDataset
from mmaction.registry import DATASETS, HOOKS
from mmengine.dist import all_reduce, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log
from torch.utils.data import get_worker_info

__all__ = ['PaddleVideoDataset', 'VideoSkipLoggerHook']

_MAX_WORKERS = 256


@DATASETS.register_module()
class PaddleVideoDataset(VideoDataset):
    """``VideoDataset`` for list files with or without the video suffix; bad videos skipped.

    Args:
        ann_file: list file, one ``path label`` per line (paths relative to ``data_prefix``).
        pipeline: data pipeline.
        data_prefix: ``dict(video=root)``.
        suffix: appended to paths that do not already end with it (e.g. '.avi'); '' for none.
        max_skips: consecutive failures after which the dataset gives up with an error.
        **kwargs: other ``VideoDataset`` arguments.
    """

    def __init__(self, ann_file, pipeline, data_prefix=dict(video=''), suffix='',
                 max_skips=50, **kwargs):
        self.suffix = suffix
        self.max_skips = max_skips
        # One slot per dataloader worker (plus the main process): workers are other processes,
        # so the counts live in shared memory; separate slots need no lock.
        self.skip_counts = torch.zeros(_MAX_WORKERS + 1, dtype=torch.int64).share_memory_()
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

    @property
    def num_skipped(self):
        """Videos skipped so far in this process and its dataloader workers."""
        return int(self.skip_counts.sum())

    def _note_skip(self, idx, err):
        worker = get_worker_info()
        slot = 0 if worker is None else 1 + worker.id % _MAX_WORKERS
        self.skip_counts[slot] += 1
        name = self.get_data_info(idx).get('filename', f'sample {idx}')
        print_log(f'skipped video {name}: {type(err).__name__}: {err}', logger='current',
                  level=30)

    def __getitem__(self, idx):
        if not self._fully_initialized:
            self.full_init()
        for attempt in range(self.max_skips + 1):
            try:
                data = self.prepare_data(idx)
            except Exception as err:  # any failure of this video's pipeline: skip it
                self._note_skip(idx, err)
                data = None
            if data is not None:
                return data
            # Test time takes the next video so the order stays deterministic.
            idx = (idx + 1) % len(self) if self.test_mode else int(np.random.randint(len(self)))
        raise RuntimeError(f'PaddleVideoDataset: {self.max_skips + 1} videos in a row failed '
                           f'to load from {self.ann_file}; check the videos and the decoder.')


def _find_skip_counter(dataset):
    while dataset is not None:
        if hasattr(dataset, 'skip_counts'):
            return dataset
        dataset = getattr(dataset, 'dataset', None)
    return None


@HOOKS.register_module()
class VideoSkipLoggerHook(Hook):
    """Log, after each training epoch, how many videos were skipped (all ranks together)."""

    priority = 'BELOW_NORMAL'

    def __init__(self):
        self._last = 0

    def after_train_epoch(self, runner):
        """Log the number of skipped videos of this epoch and of the whole run."""
        dataset = _find_skip_counter(runner.train_dataloader.dataset)
        if dataset is None:
            return
        total = torch.tensor(dataset.num_skipped, dtype=torch.int64)
        if get_world_size() > 1:
            all_reduce(total)
        total = int(total)
        runner.message_hub.update_scalar('train/skipped_videos', total - self._last)
        print_log(f'epoch {runner.epoch + 1}: skipped {total - self._last} unreadable or '
                  f'too short videos ({total} in total)', logger='current')
        self._last = total
