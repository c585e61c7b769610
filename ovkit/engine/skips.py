"""Corrupt or missing samples are skipped and counted, in every family, without config edits.

mmengine's ``BaseDataset.__getitem__`` already draws another sample when the pipeline returns
None (training only), but a loading transform that meets a truncated, random-bytes or missing
file *raises* (mmcv: ``AssertionError: failed to load image``; decord / PyAV for videos), which
kills the run. :func:`protect` wraps a dataset's pipeline in :class:`SkipBadSamples`, which
turns such an exception into None, so mmengine's own refetch replaces the sample, and records
the file. The record rides with the next good sample (a string under :data:`SKIP_KEY`, which
every collate function passes through) to the main process, where
:class:`SkipBadSamplesHook` removes it from the batch before the model sees it, counts, logs
the count and the first file names per epoch (summed over ranks) and stops the run with a
clear error once the skipped fraction passes ``max_skip_ratio`` (default 1%).

At test/val time no sample may be dropped (mmengine refuses None there): the wrapper loads the
next good sample in its place and marks it; the hook evaluates everything else and leaves the
marked ones out of every metric, which then reports ``skipped_samples`` with the files named in
the log. (For COCO-style metrics the ground truth of a skipped image still counts: its objects
are missed.)

Written by hand: the hosts have no skip counting. The hook is enabled by ovkit's runtime
bases (``default_hooks.bad_samples``); ``tools/train.py`` / ``test.py`` protect the datasets
as they are built (:func:`ovkit.engine.guards.install`), so data-loader workers start with the
protected pipeline. Configs run by other tools get the protection at ``before_run`` (for
workers already started, from their next epoch; a warning says so).
"""
import functools

from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from .checkpoint import checkpoint_due
from .errors import UserError

__all__ = ['SKIP_KEY', 'SkipBadSamples', 'SkipBadSamplesHook', 'SkippedSample',
           'TooManyBadSamplesError', 'protect', 'find_hook', 'leaf_datasets']

SKIP_KEY = 'ovkit_skipped'  # in a sample dict: '\n'-joined records of skipped samples
STATE_KEY = 'ovkit_bad_samples'  # in a checkpoint: the counts a resumed run continues
PATH_KEYS = ('img_path', 'filename', 'frame_dir', 'video_path', 'file_name', 'img')


class TooManyBadSamplesError(UserError):
    """More samples failed to load than the config allows."""


class _TooManyBadSamplesAllRanks(TooManyBadSamplesError):
    collective = True


def _sample_name(data_info):
    for key in PATH_KEYS:
        value = data_info.get(key) if isinstance(data_info, dict) else None
        if isinstance(value, str) and value:
            return value
    idx = data_info.get('sample_idx') if isinstance(data_info, dict) else None
    return f'sample {idx}'


def _record(data_info, exc):
    text = f'{type(exc).__name__}: {exc}'.replace('\n', ' ')
    return f'{_sample_name(data_info)} ({text[:160]})'


class SkipBadSamples:
    """A dataset pipeline that turns a sample's loading error into a recorded skip.

    Args:
        pipeline: the dataset's own pipeline (mmengine ``Compose``).
        dataset: the dataset (test mode: to load a stand-in sample).
        max_consecutive: this many failures in a row stop the run: the data or the pipeline is
            broken as a whole, not a sample.
    """

    def __init__(self, pipeline, dataset, max_consecutive=50):
        self.pipeline = pipeline
        self.dataset = dataset
        self.max_consecutive = max_consecutive
        self._pending = []
        self._failures = 0

    def __getattr__(self, name):  # transforms, __repr__ helpers, ...: the wrapped pipeline's
        if name in ('pipeline', 'dataset'):
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self):
        return f'SkipBadSamples({self.pipeline!r})'

    def _fail(self, data_info, exc):
        self._pending.append(_record(data_info, exc))
        self._failures += 1
        if self._failures >= self.max_consecutive:
            records, self._pending = self._pending, []
            raise TooManyBadSamplesError(
                f'{self._failures} samples in a row failed to load, so the data (or the '
                f'pipeline) is broken as a whole: {"; ".join(records[:3])}. Check data_root / '
                'data_prefix / the pipeline, or the first error named here.') from exc

    def __call__(self, data_info):
        try:
            data = self.pipeline(data_info)
        except Exception as exc:  # any loader: PIL, cv2, decord, PyAV, a missing file ...
            self._fail(data_info, exc)
            if getattr(self.dataset, 'test_mode', False):
                return self._stand_in(data_info)
            return None  # mmengine's BaseDataset.__getitem__ draws another sample
        self._failures = 0
        if data is not None and isinstance(data, dict):
            data[SKIP_KEY] = '\n'.join(self._pending)
            self._pending = []
        return data

    def _stand_in(self, data_info):
        """Test mode: the next loadable sample, marked so that no metric counts it."""
        n = len(self.dataset)
        start = data_info.get('sample_idx', 0) if isinstance(data_info, dict) else 0
        for step in range(1, n):
            other = self.dataset.get_data_info((start + step) % n)
            try:
                data = self.pipeline(other)
            except Exception as exc:
                self._fail(other, exc)
                self._pending.pop()  # that one is reported when its own turn comes
                continue
            if isinstance(data, dict):
                self._failures = 0
                data[SKIP_KEY] = '\n'.join(self._pending)
                self._pending = []
                return data
        raise TooManyBadSamplesError(f'no sample of the {n} in this test set can be loaded: '
                                     f'{"; ".join(self._pending[:3])}')


def leaf_datasets(dataset):
    """The datasets with a pipeline inside ``dataset`` (through Concat/Repeat/... wrappers)."""
    if hasattr(dataset, 'pipeline') and hasattr(dataset, 'get_data_info'):
        yield dataset
        return
    for inner in getattr(dataset, 'datasets', None) or []:
        yield from leaf_datasets(inner)
    inner = getattr(dataset, 'dataset', None)
    if inner is not None:
        yield from leaf_datasets(inner)


def protect(dataset, max_consecutive=50):
    """Wrap the pipeline of every dataset inside ``dataset`` in :class:`SkipBadSamples`.

    Args:
        dataset: a built dataset (wrappers are followed).
        max_consecutive: see :class:`SkipBadSamples`.

    Returns:
        int: the number of pipelines newly wrapped.
    """
    wrapped = 0
    for leaf in leaf_datasets(dataset):
        if not isinstance(leaf.pipeline, SkipBadSamples):
            leaf.pipeline = SkipBadSamples(leaf.pipeline, leaf, max_consecutive)
            wrapped += 1
    return wrapped


def find_hook(runner):
    """The runner's :class:`SkipBadSamplesHook`, or None (opted out)."""
    return next((h for h in runner.hooks if isinstance(h, SkipBadSamplesHook)), None)


class SkippedSample:
    """Placeholder a metric keeps instead of a skipped test sample's result, so every rank
    hands over one result per sample (mmengine's ``collect_results`` zips them by position)."""

    def __init__(self, record):
        self.record = record


def _split(records):
    return [r for r in (records or '').split('\n') if r]


@HOOKS.register_module()
class SkipBadSamplesHook(Hook):
    """Counts, logs and bounds the samples :class:`SkipBadSamples` skipped.

    Args:
        max_skip_ratio: stop the run when more than this fraction of the training samples
            drawn so far failed to load (checked every ``check_interval`` iterations once
            ``min_samples`` were drawn, and at each epoch's end).
        min_samples: samples to draw before the ratio is judged.
        check_interval: iterations between the (all-rank) checks.
        log_names: file names logged per epoch.
        max_consecutive: failures in a row in one process that stop the run at once.
    """

    priority = 'VERY_HIGH'  # take the records out of the batch before other hooks see it

    def __init__(self, max_skip_ratio=0.01, min_samples=100, check_interval=50, log_names=5,
                 max_consecutive=50):
        self.max_skip_ratio = max_skip_ratio
        self.min_samples = min_samples
        self.check_interval = check_interval
        self.log_names = log_names
        self.max_consecutive = max_consecutive
        self._epoch_drawn = self._epoch_skipped = 0
        self._epoch_records = []
        self.total_drawn = self.total_skipped = 0
        self._eval_marks = []
        self._eval_records = []
        self._loaded = self._stash = None

    # ------------------------------------------------------------------ resume
    def _stash_counts(self, runner, iteration):
        """Gather the counts not yet summed, on every rank, for the checkpoint written next.

        ``runner.save_checkpoint`` runs on rank 0 only, so the gather happens here, where every
        rank passes at the same point (see :func:`ovkit.engine.checkpoint.checkpoint_due`).
        """
        local = (self._epoch_drawn, self._epoch_skipped, self._epoch_records)
        parts = all_gather_object(local) if get_dist_info()[1] > 1 else [local]
        self._stash = dict(
            iter=iteration, total_drawn=self.total_drawn, total_skipped=self.total_skipped,
            epoch_drawn=sum(p[0] for p in parts), epoch_skipped=sum(p[1] for p in parts),
            epoch_records=list(dict.fromkeys(n for p in parts for n in p[2]))[:self.log_names])

    def before_save_checkpoint(self, runner, checkpoint):
        # A resumed run continues the same totals and the same threshold.
        if self._stash is not None and self._stash['iter'] == checkpoint['meta'].get('iter'):
            checkpoint[STATE_KEY] = self._stash

    def after_load_checkpoint(self, runner, checkpoint):
        self._loaded = checkpoint.get(STATE_KEY)

    def before_train(self, runner):
        # Only a resume continues the counts (``load_from`` starts a new run at iteration 0).
        state, self._loaded = self._loaded, None
        if not state or runner.iter == 0 or state.get('iter') != runner.iter:
            return
        self.total_drawn, self.total_skipped = state['total_drawn'], state['total_skipped']
        if get_dist_info()[0] == 0:  # the sums over ranks stay right with one holder
            self._epoch_drawn, self._epoch_skipped = state['epoch_drawn'], state['epoch_skipped']
            self._epoch_records = list(state['epoch_records'])

    # ------------------------------------------------------------------ setup
    def before_run(self, runner):
        for name in ('_train_loop', '_val_loop', '_test_loop'):
            loop = getattr(runner, name, None)
            loader = getattr(loop, 'dataloader', None)
            dataset = getattr(loader, 'dataset', None)
            if dataset is None or not protect(dataset, self.max_consecutive):
                continue
            if getattr(loader, 'num_workers', 0) > 0:
                runner.logger.warning(
                    'SkipBadSamplesHook: the datasets were built without ovkit\'s tools, so data '
                    'workers that already started load unprotected samples until their next '
                    'epoch; run tools/train.py, or call ovkit.engine.guards.install(runner) '
                    'before runner.train().')

    # ------------------------------------------------------------------ training
    def before_train_iter(self, runner, batch_idx, data_batch=None):
        records = data_batch.pop(SKIP_KEY, None) if isinstance(data_batch, dict) else None
        if records is None:
            return
        items = [r for recs in records for r in _split(recs)]
        self._epoch_drawn += len(records) + len(items)
        self._epoch_skipped += len(items)
        for item in items:  # the first few distinct files (one may fail each time it is drawn)
            if item not in self._epoch_records and len(self._epoch_records) < self.log_names:
                self._epoch_records.append(item)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        loop = runner.train_loop
        per_epoch = 0
        if not isinstance(loop, EpochBasedTrainLoop):
            # Iteration-based: one pass over the data loader is this hook's epoch.
            per_epoch = len(loop.dataloader) if hasattr(loop.dataloader, '__len__') else 0
        if per_epoch and (runner.iter + 1) % per_epoch == 0:
            self._reduce(runner, end_of_epoch=True)
        elif self.every_n_train_iters(runner, self.check_interval):
            self._reduce(runner, end_of_epoch=False)
        if checkpoint_due(runner, by_epoch=False):
            self._stash_counts(runner, runner.iter + 1)

    def after_train_epoch(self, runner):
        # Every rank draws the same number of batches, so all agree on whether to reduce.
        if self._epoch_drawn:
            self._reduce(runner, end_of_epoch=True)
        if checkpoint_due(runner, by_epoch=True):
            self._stash_counts(runner, runner.iter)

    def _reduce(self, runner, end_of_epoch):
        """Sum the counts over ranks; log at an epoch's end; stop past the threshold."""
        local = (self._epoch_drawn, self._epoch_skipped, self._epoch_records)
        world = get_dist_info()[1]
        parts = all_gather_object(local) if world > 1 else [local]
        drawn = sum(p[0] for p in parts)
        skipped = sum(p[1] for p in parts)
        names = list(dict.fromkeys(n for p in parts for n in p[2]))[:self.log_names]
        total_drawn, total_skipped = self.total_drawn + drawn, self.total_skipped + skipped
        ratio = total_skipped / total_drawn if total_drawn else 0.0
        if total_skipped and ratio > self.max_skip_ratio and (
                total_drawn >= self.min_samples or end_of_epoch):
            raise _TooManyBadSamplesAllRanks(
                f'{total_skipped} of {total_drawn} training samples drawn so far ({ratio:.1%}) '
                f'failed to load, more than max_skip_ratio={self.max_skip_ratio:g} '
                f'(default_hooks.bad_samples.max_skip_ratio); e.g. {"; ".join(names)}. Repair '
                'or remove these files (and their annotations), or allow more with '
                '--cfg-options default_hooks.bad_samples.max_skip_ratio=0.05')
        if not end_of_epoch:
            return
        if skipped:
            runner.logger.warning(
                f'skipped {skipped} of {drawn} training samples this epoch that failed to load '
                f'(replaced by others; {total_skipped} in this run, {ratio:.2%}): '
                f'{"; ".join(names)}')
        self.total_drawn, self.total_skipped = total_drawn, total_skipped
        self._epoch_drawn = self._epoch_skipped = 0
        self._epoch_records = []

    # ------------------------------------------------------------------ evaluation
    def before_val(self, runner):
        self._wrap_metrics(runner.val_loop.evaluator)

    def before_test(self, runner):
        self._wrap_metrics(runner.test_loop.evaluator)

    def before_val_iter(self, runner, batch_idx, data_batch=None):
        self._take_marks(data_batch)

    def before_test_iter(self, runner, batch_idx, data_batch=None):
        self._take_marks(data_batch)

    def _take_marks(self, data_batch):
        records = data_batch.pop(SKIP_KEY, None) if isinstance(data_batch, dict) else None
        self._eval_marks = list(records or [])

    def _wrap_metrics(self, evaluator):
        for metric in getattr(evaluator, 'metrics', []):
            if getattr(metric, '_ovkit_skip_wrapped', False):
                continue
            metric._ovkit_skip_wrapped = True
            metric.process = functools.partial(self._process, metric, metric.process)
            metric.compute_metrics = functools.partial(self._compute, metric,
                                                       metric.compute_metrics)

    def _process(self, metric, process, data_batch, data_samples):
        marks = self._eval_marks
        if not any(marks):
            return process(data_batch, data_samples)
        # Keep each rank's results in sample order: one result or placeholder per sample.
        for sample, mark in zip(data_samples, marks + [''] * len(data_samples)):
            if mark:
                metric.results.append(SkippedSample(mark))
            else:
                process(data_batch, [sample])

    @staticmethod
    def _compute(metric, compute, results):
        from mmengine.logging import print_log
        skipped = [r for r in results if isinstance(r, SkippedSample)]
        metrics = compute([r for r in results if not isinstance(r, SkippedSample)])
        if skipped:
            records = [s for r in skipped for s in _split(r.record)]
            print_log(f'{len(records)} evaluation samples failed to load and are left out of '
                      f'{type(metric).__name__}: {"; ".join(records[:5])}', logger='current',
                      level=30)
            metrics = dict(metrics, skipped_samples=len(records))
        return metrics
