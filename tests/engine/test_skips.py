"""Corrupt or missing samples: replaced and recorded by the pipeline wrapper, counted, logged and
bounded by the hook (1 and 2 processes), left out of the metrics at test time."""
import copy
import os
import os.path as osp
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import CheckpointHook

from ovkit.engine import skips
from ovkit.engine.guards import NonFiniteLossError, NonFiniteLossHook
from ovkit.engine.skips import SKIP_KEY, SkipBadSamplesHook, TooManyBadSamplesError
from tests.conftest import REPO
from tests.engine import damage

FRCNN = osp.join(REPO, 'configs', 'shapes', 'faster_rcnn_tiny.py')


@pytest.fixture(scope='module')
def ws(shapes_workspace, tmp_path_factory):
    """Shapes data with images 2 (truncated), 5 (random bytes), 9 (missing) of train damaged."""
    root = damage.copy_workspace(shapes_workspace, tmp_path_factory.mktemp('skips'))
    bad = [damage.image_path(root, 'train', i) for i in (2, 5, 9)]
    damage.truncate(bad[0], 300)
    damage.random_bytes(bad[1])
    damage.remove(bad[2])
    return root, bad


def _dataset(ws, test_mode=False):
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(FRCNN)
    ds = copy.deepcopy(cfg.test_dataloader.dataset if test_mode else
                       cfg.train_dataloader.dataset)
    ds.update(data_root=osp.join(ws, damage.COCO) + '/', data_prefix=dict(img='train/'),
              ann_file='annotations/train.json', test_mode=test_mode)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DATASETS.build(ds)


def test_bad_training_sample_is_replaced_and_recorded(ws):
    root, bad = ws
    dataset = _dataset(root)
    assert skips.protect(dataset) == 1 and skips.protect(dataset) == 0  # idempotent
    index = next(i for i in range(len(dataset)) if dataset.get_data_info(i)['img_path'] ==
                 bad[1])
    np.random.seed(0)  # mmengine draws the replacement with numpy
    sample = dataset[index]
    assert sample['data_samples'].img_path != bad[1]  # another sample took its place
    records = sample[SKIP_KEY].split('\n')
    assert records[0].startswith(f'{bad[1]} (AssertionError: failed to load image')
    good = next(i for i in range(len(dataset)) if dataset.get_data_info(i)['img_path']
                not in bad)
    assert dataset[good][SKIP_KEY] == ''


def test_bad_test_sample_gets_a_marked_stand_in(ws):
    root, bad = ws
    dataset = _dataset(root, test_mode=True)
    skips.protect(dataset)
    index = next(i for i in range(len(dataset)) if dataset.get_data_info(i)['img_path'] ==
                 bad[2])
    sample = dataset[index]
    assert sample['data_samples'].img_path == dataset.get_data_info(index + 1)['img_path']
    assert sample[SKIP_KEY].startswith(f'{bad[2]} (FileNotFoundError')


def test_a_broken_data_set_stops_at_once(ws):
    root, _ = ws
    dataset = _dataset(root)
    skips.protect(dataset, max_consecutive=5)

    def missing(data_info):  # as if data_prefix pointed to the wrong folder
        raise FileNotFoundError(f"No such file: '{data_info['img_path']}'")
    dataset.pipeline.pipeline = missing
    with pytest.raises(TooManyBadSamplesError, match=r'5 samples in a row failed to load.*'
                       r'FileNotFoundError'):
        dataset[0]


# --------------------------------------------------------------------------- the hook
class _Logger:
    def __init__(self):
        self.lines = []

    def warning(self, msg):
        self.lines.append(msg)

    info = warning


class _Loop:
    def __init__(self, per_epoch):
        self.dataloader = list(range(per_epoch))


class _Runner:
    def __init__(self, per_epoch=4):
        self.iter, self.logger, self.hooks = 0, _Logger(), []
        self.train_loop = _Loop(per_epoch)
        self.train_dataloader = self.train_loop.dataloader


def _iterate(hook, runner, batches):
    """Feed batches of per-sample skip records through the hook, as the train loop does."""
    for records in batches:
        batch = {'inputs': [0] * len(records), SKIP_KEY: list(records)}
        hook.before_train_iter(runner, runner.iter, batch)
        assert SKIP_KEY not in batch  # the model never sees the records
        hook.after_train_iter(runner, runner.iter, batch)
        runner.iter += 1


def test_hook_counts_and_logs_per_epoch():
    hook, runner = SkipBadSamplesHook(max_skip_ratio=0.5, check_interval=100), _Runner()
    _iterate(hook, runner, [['', 'a.png (AssertionError)'], ['', ''], ['b.png (OSError)\n'
                            'a.png (AssertionError)', ''], ['', '']])
    assert runner.logger.lines == [
        'skipped 3 of 11 training samples this epoch that failed to load (replaced by others; '
        '3 in this run, 27.27%): a.png (AssertionError); b.png (OSError)']
    _iterate(hook, runner, [['', '']] * 4)  # a clean epoch logs nothing
    assert len(runner.logger.lines) == 1 and hook.total_drawn == 19 and hook.total_skipped == 3


def test_resumed_run_continues_the_counts():
    """Counts ride in the checkpoint: a run stopped mid-epoch and resumed logs and judges
    exactly as the uninterrupted run (and ``load_from``, at iteration 0, starts afresh)."""
    epoch1 = [['', 'a.png (AssertionError)'], ['', ''], ['', ''], ['', '']]
    epoch2 = [['b.png (OSError)', ''], ['', ''], ['', 'c.png (OSError)'], ['', '']]
    whole, whole_runner = SkipBadSamplesHook(max_skip_ratio=0.5, check_interval=100), _Runner()
    _iterate(whole, whole_runner, epoch1 + epoch2)

    first, runner = SkipBadSamplesHook(max_skip_ratio=0.5, check_interval=100), _Runner()
    runner.hooks.append(CheckpointHook(interval=6, by_epoch=False, save_last=False))
    _iterate(first, runner, epoch1 + epoch2[:2])  # killed after the checkpoint of iteration 6
    checkpoint = {'meta': {'iter': runner.iter}}
    first.before_save_checkpoint(runner, checkpoint)  # on rank 0 only, as mmengine calls it
    assert checkpoint['ovkit_bad_samples']['epoch_skipped'] == 1
    checkpoint = torch.load(_roundtrip(checkpoint), weights_only=True)  # what resume reads

    resumed, resumed_runner = SkipBadSamplesHook(max_skip_ratio=0.5, check_interval=100), \
        _Runner()
    resumed_runner.iter = runner.iter
    resumed.after_load_checkpoint(resumed_runner, checkpoint)
    resumed.before_train(resumed_runner)
    _iterate(resumed, resumed_runner, epoch2[2:])
    assert resumed_runner.logger.lines[-1] == whole_runner.logger.lines[-1] == (
        'skipped 2 of 10 training samples this epoch that failed to load (replaced by others; '
        '3 in this run, 15.79%): b.png (OSError); c.png (OSError)')
    assert (resumed.total_drawn, resumed.total_skipped) == (whole.total_drawn, 3)

    fresh, fresh_runner = SkipBadSamplesHook(), _Runner()  # load_from: iteration 0
    fresh.after_load_checkpoint(fresh_runner, checkpoint)
    fresh.before_train(fresh_runner)
    assert (fresh.total_drawn, fresh.total_skipped, fresh._epoch_drawn) == (0, 0, 0)


def _roundtrip(obj):
    import io
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def test_hook_stops_past_the_threshold():
    hook, runner = SkipBadSamplesHook(max_skip_ratio=0.01, min_samples=6, check_interval=1), \
        _Runner(per_epoch=100)
    _iterate(hook, runner, [['', ''], ['x.png (OSError)', '']])  # 5 drawn: not judged yet
    with pytest.raises(TooManyBadSamplesError, match=r'^1 of 7 training samples drawn so far '
                       r'\(14\.3%\) failed to load, more than max_skip_ratio=0\.01 .*x\.png'):
        _iterate(hook, runner, [['', '']])


class _CountMetric(BaseMetric):
    def process(self, data_batch, data_samples):
        self.results.extend(s['id'] for s in data_samples)

    def compute_metrics(self, results):
        return dict(ids=list(results))


def test_skipped_test_samples_are_left_out_of_metrics_and_reported():
    metric, hook = _CountMetric(), SkipBadSamplesHook()
    hook._wrap_metrics(type('E', (), {'metrics': [metric]})())
    for batch in (['', 'v/3.png (OSError)'], ['', '']):
        data = {'inputs': [0, 0], SKIP_KEY: batch}
        hook.before_test_iter(None, 0, data)
        metric.process(data, [{'id': len(metric.results)}, {'id': len(metric.results) + 1}])
    assert [type(r).__name__ for r in metric.results] == ['int', 'SkippedSample', 'int', 'int']
    assert metric.compute_metrics(metric.results) == dict(ids=[0, 2, 3], skipped_samples=1)


# --------------------------------------------------------------------------- two processes
def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _two_ranks(rank, port, out):
    os.environ['RANK'] = str(rank)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2)
    try:
        result = {}
        # Skips: only rank 1 meets a bad file; both log the same sum and stop together.
        hook, runner = SkipBadSamplesHook(max_skip_ratio=0.12, check_interval=100), _Runner(2)
        bad = ['r1.png (OSError)', ''] if rank == 1 else ['', '']
        _iterate(hook, runner, [['', ''], bad])
        result['log'] = runner.logger.lines
        try:
            _iterate(hook, runner, [bad, bad])
        except TooManyBadSamplesError as exc:
            result['stop'] = (exc.collective, str(exc).split(' failed')[0])
        # NaN loss on rank 1 only: both ranks stop at the same iteration.
        nan = torch.tensor(float('nan') if rank == 1 else 0.5)
        try:
            NonFiniteLossHook().after_train_iter(type('R', (), {'iter': 6})(), 6,
                                                 outputs=dict(loss=nan, loss_cls=nan))
        except NonFiniteLossError as exc:
            result['nan'] = str(exc).split(';')[0]
        out[rank] = result
    finally:
        dist.destroy_process_group()


def test_two_processes_decide_together():
    out = mp.Manager().dict()
    mp.spawn(_two_ranks, args=(_free_port(), out), nprocs=2)
    assert out[0] == out[1]
    assert out[0]['log'] == ['skipped 1 of 9 training samples this epoch that failed to load '
                             '(replaced by others; 1 in this run, 11.11%): r1.png (OSError)']
    assert out[0]['stop'] == (True, '3 of 19 training samples drawn so far (15.8%)')
    assert out[0]['nan'] == ('training stopped at iteration 7: the loss is not finite '
                             '(loss_cls=nan, loss=nan) on rank 1 (1 of 2 ranks)')
