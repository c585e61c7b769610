"""Silent wrong results become errors: NaN arrays, NaN losses, checkpoints that do not fit,
and how the tools print them (one line, once)."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.model import BaseModel
from mmengine.runner import Runner

from ovkit.engine import errors
from ovkit.engine.guards import (
    CheckpointFitHook,
    CheckpointMismatchError,
    NonFiniteArrayError,
    NonFiniteLossError,
    NonFiniteLossHook,
    check_finite,
    checkpoint_fit_problem,
    non_finite_rows,
)
from tests.conftest import REPO, experiment_name

FRCNN = osp.join(REPO, 'configs', 'shapes', 'faster_rcnn_tiny.py')


def test_non_finite_rows_and_check_finite():
    a = np.ones((5, 3), np.float32)
    a[1, 2], a[4, 0] = np.nan, -np.inf
    assert non_finite_rows(a) == [1, 4] == non_finite_rows(torch.from_numpy(a))
    with pytest.raises(NonFiniteArrayError, match=r"x='e\.npy' holds NaN/inf in 2 of its 5 rows "
                       r'\(first: row 1, 4\).*Regenerate'):
        check_finite(a, "x='e.npy'", 'Regenerate it.')
    check_finite(np.ones((2, 2)), 'fine')


# --------------------------------------------------------------------------- NaN loss
class _Toy(BaseModel):
    """y = w * x; ``loss_b`` becomes NaN from ``nan_from`` (counted in forward calls)."""

    def __init__(self, nan_from):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.nan_from, self.calls = nan_from, 0

    def forward(self, inputs, data_samples=None, mode='loss'):
        self.calls += 1
        loss = ((self.w * inputs.float() - 1) ** 2).mean()
        bad = self.calls >= self.nan_from
        return dict(loss_a=loss, loss_b=loss * (float('nan') if bad else 0.5))


class _Ones(BaseDataset):
    def __init__(self):
        super().__init__(serialize_data=False, lazy_init=True)

    def load_data_list(self):
        return [dict(inputs=torch.ones(1)) for _ in range(8)]

    def prepare_data(self, idx):
        return dict(inputs=torch.ones(1))


def _toy_runner(tmp_path, nan_from, hooks):
    return Runner(
        model=_Toy(nan_from), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=_Ones(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=False, max_iters=6),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks, default_scope='mmengine',
        experiment_name=experiment_name('guards'))


def test_nan_loss_stops_training_naming_iteration_and_term(tmp_path):
    runner = _toy_runner(tmp_path, nan_from=3, hooks=[dict(type='NonFiniteLossHook')])
    with pytest.raises(NonFiniteLossError) as err:
        runner.train()
    text = str(err.value)
    assert 'training stopped at iteration 3: the loss is not finite (loss_b=nan, loss=nan)' \
        in text and 'nonfinite_loss=None' in text
    assert (tmp_path / 'iter_2.pth').exists() and not (tmp_path / 'iter_3.pth').exists()
    saved = torch.load(tmp_path / 'iter_2.pth', weights_only=False)['state_dict']['w']
    assert torch.isfinite(saved).all()


def test_nan_loss_opt_out_trains_on(tmp_path):
    runner = _toy_runner(tmp_path, nan_from=3, hooks=[dict(type='NonFiniteLossHook',
                                                           enabled=False)])
    runner.train()
    assert (tmp_path / 'iter_6.pth').exists()  # what mmengine alone does: NaN weights saved
    assert torch.isnan(torch.load(tmp_path / 'iter_6.pth',
                                  weights_only=False)['state_dict']['w']).all()


def test_bad_terms_reads_only_losses():
    outputs = dict(loss=torch.tensor(float('inf')), acc=torch.tensor(float('nan')),
                   loss_cls=torch.tensor(0.3), loss_list=2.0)
    assert list(NonFiniteLossHook.bad_terms(outputs)) == ['loss']


# --------------------------------------------------------------------------- checkpoint fit
@pytest.fixture(scope='module')
def detectors():
    """The shapes Faster R-CNN (8 classes) and another model: the same with 3 classes."""
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(FRCNN)
    other = copy.deepcopy(cfg.model)
    other.roi_head.bbox_head.num_classes = 3
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(cfg.model), MODELS.build(other)


def test_checkpoint_of_another_model_is_named(detectors):
    model, other = detectors
    assert checkpoint_fit_problem(model, {'state_dict': model.state_dict()}) is None
    problem = checkpoint_fit_problem(model, {'state_dict': other.state_dict()})
    assert problem.startswith('4 have another shape (roi_head.bbox_head.fc_cls.bias: '
                              'checkpoint (4,) vs model (9,), roi_head.bbox_head.fc_cls.weight: '
                              'checkpoint (4, 64) vs model (9, 64)')
    linear = torch.nn.Linear(2, 2).state_dict()
    problem = checkpoint_fit_problem(model, {'state_dict': {f'module.{k}': v
                                                            for k, v in linear.items()}})
    n = len(model.state_dict())
    assert f'{n} of the model\'s {n} weights are missing' in problem
    assert '2 weights are not in the model (bias, weight)' in problem
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state['backbone.conv1.weight'][0] = float('nan')
    assert checkpoint_fit_problem(model, state) == '1 weights hold NaN/inf (backbone.conv1.weight)'
    assert checkpoint_fit_problem(model, [1, 2]).startswith('it holds no state dict')


class _FakeRunner:
    def __init__(self, model):
        self.model, self.warnings = model, []
        self.logger = type('L', (), {'warning': lambda _, m: self.warnings.append(m)})()


def test_checkpoint_fit_hook(detectors):
    model, other = detectors
    hook = CheckpointFitHook(source="checkpoint 'other.pth'")
    with pytest.raises(CheckpointMismatchError, match=r"checkpoint 'other\.pth' does not fit "
                       r'the model of this config: 4 have another shape .*--allow-partial'):
        hook.after_load_checkpoint(_FakeRunner(model), {'state_dict': other.state_dict()})
    runner = _FakeRunner(model)
    CheckpointFitHook(allow_partial=True).after_load_checkpoint(
        runner, {'state_dict': other.state_dict()})
    assert runner.warnings and runner.warnings[0].startswith('--allow-partial: checkpoint')


# --------------------------------------------------------------------------- printing
def test_user_errors_print_one_line_once(capsys, monkeypatch):
    with pytest.raises(SystemExit) as stop, errors.exit_on_user_error():
        raise errors.UserError('config key x: bad. Fix: y')
    assert stop.value.code == errors.EXIT_USER_ERROR
    assert capsys.readouterr().err == 'error: config key x: bad. Fix: y\n'
    monkeypatch.setenv('RANK', '1')
    with pytest.raises(SystemExit), errors.exit_on_user_error():
        raise NonFiniteLossError('all ranks raise this')
    assert capsys.readouterr().err == ''  # collective: rank 0 prints it
    with pytest.raises(SystemExit), errors.exit_on_user_error():
        raise errors.UserError('only this rank met it')
    assert capsys.readouterr().err == 'error: only this rank met it\n'
    wrapped = errors.UserError('Caught UserError in DataLoader worker process 0.\nOriginal '
                               'Traceback (most recent call last):\n  File "x", line 1\n'
                               'ovkit.engine.errors.UserError: 50 samples failed\n')
    monkeypatch.setenv('RANK', '0')
    with pytest.raises(SystemExit), errors.exit_on_user_error():
        raise wrapped
    assert capsys.readouterr().err == 'error: 50 samples failed\n'


def test_nan_clip_weights_refused_at_load(tmp_path):
    from ovkit.clip import build_clip
    clip = build_clip(dict(model_name='tiny', seed=0))
    state = clip.model.state_dict()
    state['token_embedding.weight'][7, 3] = float('nan')
    torch.save(state, tmp_path / 'clip.pth')
    with pytest.raises(NonFiniteArrayError, match=r"model\.clip_cfg\.checkpoint='.*clip\.pth' "
                       r'holds NaN/inf in 1 tensors \(token_embedding\.weight\)'):
        build_clip(dict(model_name='tiny', checkpoint=str(tmp_path / 'clip.pth')),
                   cfg_key='model.clip_cfg')


def test_tools_test_refuses_another_model_in_the_runner(detectors, shapes_workspace,
                                                         tmp_path, monkeypatch, capsys):
    """tools/test.py on one process: the Runner's load hits CheckpointFitHook."""
    from ovkit.tools.test import main
    _, other = detectors
    torch.save({'meta': {}, 'state_dict': other.state_dict()}, tmp_path / 'other.pth')
    monkeypatch.chdir(shapes_workspace)
    monkeypatch.delenv('OVKIT_PREFLIGHT', raising=False)
    with pytest.raises(SystemExit) as stop:
        main([FRCNN, str(tmp_path / 'other.pth'), '--work-dir', str(tmp_path / 'w')])
    assert stop.value.code == errors.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: checkpoint '{tmp_path / 'other.pth'}' does not fit the "
                              'model of this config: 4 have another shape')


def test_toy_runners_of_one_second_keep_their_own_folders(tmp_path, monkeypatch):
    # Two Runners made in one second (as consecutive tests can be) must not share mmengine's
    # Visualizer: its name is the timestamp by default, and the second Runner would get the
    # first one's and write its scalars into that folder. The clock is frozen to make it so.
    import time
    monkeypatch.setattr(time, 'time', lambda: 1.7e9)
    first = _toy_runner(tmp_path / 'a', nan_from=100, hooks=[])
    second = _toy_runner(tmp_path / 'b', nan_from=100, hooks=[])
    monkeypatch.undo()
    assert first.timestamp == second.timestamp
    assert first.visualizer is not second.visualizer
    save_dir = second.visualizer._vis_backends['LocalVisBackend']._save_dir
    assert save_dir.startswith(str(tmp_path / 'b'))
