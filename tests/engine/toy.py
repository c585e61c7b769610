"""A toy mmengine training that draws from every random generator, for the resume tests.

Registered in mmengine's root registries (test-only names): ``ToyResumeNet`` (conv + BN +
dropout, and a non-persistent feature queue that feeds the loss, like BARON's),
``ToyResumeDataset`` (augmentation from python ``random``, numpy and torch),
``ToyResumeAccuracy`` and ``ToyKillHook`` (SIGKILLs the launcher, or the process itself, at a
given iteration: a deterministic "kill at any moment").
"""
import os
import random
import signal
import time

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.dist import get_dist_info
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS
from torch import nn


@MODELS.register_module()
class ToyResumeNet(BaseModel):
    """Tiny classifier whose loss also depends on a queue of earlier features."""

    def __init__(self, num_classes=4, queue_length=12):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(8, num_classes)
        self.register_buffer('queue', torch.zeros(queue_length, 8), persistent=False)

    def forward(self, inputs, labels=None, mode='tensor'):
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        feat = self.bn(self.conv(x)).relu().mean((2, 3))
        logits = self.fc(self.drop(feat))
        if mode == 'tensor':
            return logits
        labels = torch.as_tensor(labels)
        if mode == 'predict':
            return [dict(pred=int(p), gt=int(g)) for p, g in zip(logits.argmax(1), labels)]
        queue_loss = (F.normalize(feat, dim=1) @ self.queue.clone().t()).logsumexp(1).mean()
        if self.training:
            with torch.no_grad():
                n = min(feat.shape[0], self.queue.shape[0])
                self.queue.copy_(torch.cat([feat[:n].detach(), self.queue[:-n]]))
        return dict(loss_cls=F.cross_entropy(logits, labels), loss_queue=0.1 * queue_loss)


@DATASETS.register_module()
class ToyResumeDataset(torch.utils.data.Dataset):
    """``length`` 3x8x8 images of 4 classes; training copies are flipped (python random),
    noised (numpy) and jittered (torch)."""

    metainfo = dict(classes=('a', 'b', 'c', 'd'))

    def __init__(self, length=22, augment=True):
        self.length, self.augment = length, augment

    def __len__(self):
        return self.length

    def __getitem__(self, idx):
        label = idx % 4
        g = torch.Generator().manual_seed(idx)
        img = torch.randn(3, 8, 8, generator=g) + label
        if self.augment:
            if random.random() < 0.5:
                img = img.flip(-1)
            img = img + torch.from_numpy(np.random.normal(0, 0.1, img.shape).astype(np.float32))
            img = img * (1 + 0.1 * torch.rand(()))
        return dict(inputs=img, labels=label)


@METRICS.register_module()
class ToyResumeAccuracy(BaseMetric):
    """Top-1 accuracy over the (gathered) validation set."""

    def process(self, data_batch, data_samples):
        self.results.extend(int(s['pred'] == s['gt']) for s in data_samples)

    evaluations = 0

    def compute_metrics(self, results):
        # ``evaluations`` grows with every validation: a save_best key that always improves.
        type(self).evaluations += 1
        return dict(accuracy=100.0 * sum(results) / max(len(results), 1),
                    evaluations=type(self).evaluations)


@HOOKS.register_module()
class ToyKillHook(Hook):
    """SIGKILL at the start of iteration ``$TOY_KILL_AT`` (0-based, after the batch was loaded).

    Under a launcher (``OVKIT_LAUNCHER_PID``) rank 0 kills the launcher, and the workers must
    die with it; otherwise the process kills itself. Each rank writes its PID to
    ``work_dir/pids/rank<R>`` first, so a test can check that no worker survived.
    """

    def before_run(self, runner):
        os.makedirs(os.path.join(runner.work_dir, 'pids'), exist_ok=True)
        with open(os.path.join(runner.work_dir, 'pids', f'rank{runner.rank}'), 'w') as f:
            f.write(str(os.getpid()))

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        kill_at = os.environ.get('TOY_KILL_AT')
        if kill_at is None or runner.iter != int(kill_at) or get_dist_info()[0] != 0:
            return
        launcher = os.environ.get('OVKIT_LAUNCHER_PID')
        if launcher and 'LOCAL_RANK' in os.environ:
            os.kill(int(launcher), signal.SIGKILL)
            time.sleep(60)  # the parent-death signal ends this process
        os.kill(os.getpid(), signal.SIGKILL)


def toy_config(work_dir, max_iters=12, loop='iter', checkpoint=None, val_interval=4,
               exact_resume=True, num_workers=0):
    """The toy run as an mmengine config dict.

    Args:
        work_dir: the run's work dir.
        max_iters: iterations (``loop='iter'``) or epochs (``loop='epoch'``).
        loop: 'iter' (IterBasedTrainLoop) or 'epoch' (EpochBasedTrainLoop).
        checkpoint: CheckpointHook settings (default: every 2 iterations, keep 2).
        val_interval: validation interval (iterations or epochs).
        exact_resume: enable ExactResumeHook.
        num_workers: data loader workers.
    """
    if loop == 'iter':
        train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters,
                         val_interval=val_interval)
    else:
        train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_iters,
                         val_interval=val_interval)
    return dict(
        custom_imports=dict(imports=['ovkit.engine', 'tests.engine.toy'],
                            allow_failed_imports=False),
        work_dir=str(work_dir),
        model=dict(type='ToyResumeNet'),
        train_dataloader=dict(
            batch_size=2, num_workers=num_workers,
            persistent_workers=False,
            sampler=dict(type='DefaultSampler', shuffle=True),
            dataset=dict(type='ToyResumeDataset', length=22)),
        val_dataloader=dict(
            batch_size=4, num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(type='ToyResumeDataset', length=8, augment=False)),
        val_evaluator=dict(type='ToyResumeAccuracy'),
        train_cfg=train_cfg,
        val_cfg=dict(type='ValLoop'),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05, momentum=0.9)),
        param_scheduler=[dict(type='MultiStepLR', by_epoch=loop == 'epoch',
                              milestones=[max_iters // 2], gamma=0.5)],
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=checkpoint or dict(type='CheckpointHook', interval=2, by_epoch=False,
                                          max_keep_ckpts=2),
            exact_resume=dict(type='ExactResumeHook', enabled=exact_resume)),
        custom_hooks=[dict(type='ToyKillHook')],
        randomness=dict(seed=0, deterministic=True),
        env_cfg=dict(dist_cfg=dict(backend='gloo')),
        log_level='INFO',
    )


def run_toy(work_dir, resume_from=None, hooks=(), **kwargs):
    """Train the toy in this process; returns the final model state dict.

    Args:
        work_dir: the run's work dir.
        resume_from: checkpoint to resume from; 'auto' resumes from ``last_checkpoint``.
        hooks: extra hook objects to register.
        **kwargs: passed to :func:`toy_config`.
    """
    from mmengine.config import Config
    from mmengine.runner import Runner
    from mmengine.utils import import_modules_from_strings

    from tests.conftest import experiment_name  # (here: training workers import this module)
    cfg = Config(toy_config(work_dir, **kwargs))
    import_modules_from_strings(**cfg.custom_imports)  # what Config.fromfile would do
    cfg.experiment_name = experiment_name('toy')
    if resume_from is not None:
        cfg.resume = True
        cfg.load_from = None if resume_from == 'auto' else resume_from
    runner = Runner.from_cfg(cfg)
    for hook in hooks:
        runner.register_hook(hook, priority='LOWEST')
    runner.train()
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def dump_toy_config(path, **kwargs):
    """Write :func:`toy_config` to ``path`` for the command-line tools."""
    from mmengine.config import Config
    Config(toy_config(**kwargs)).dump(str(path))
    return str(path)
