"""tools/train.py flag handling that the e2e runs do not cover."""
import os.path as osp

import pytest
import torch

from tests.conftest import REPO

CONFIG = osp.join(REPO, 'configs', 'shapes', 'faster_rcnn_tiny.py')


def _train_module():
    from ovkit.tools import train
    return train


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU fallback of --amp')
def test_amp_on_cpu_autocasts_to_bf16():
    train = _train_module()
    cfg = train.build_cfg(train.parse_args([CONFIG, '--amp', '--work-dir', '/tmp/unused']))
    assert cfg.optim_wrapper.type == 'OVKitCPUAmpOptimWrapper'
    from mmengine.optim import build_optim_wrapper
    model = torch.nn.Linear(4, 4)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    with wrapper.optim_context(model):
        out = model(torch.randn(2, 4))
    assert out.dtype == torch.bfloat16
    assert model(torch.randn(2, 4)).dtype == torch.float32  # only inside the context
    loss = out.float().sum()
    wrapper.update_params(loss)  # backward + step work without a loss scaler


def test_resume_auto_and_cfg_options():
    train = _train_module()
    cfg = train.build_cfg(train.parse_args([CONFIG, '--resume', '--cfg-options',
                                            'train_cfg.max_iters=7']))
    assert cfg.resume is True and cfg.load_from is None and cfg.train_cfg.max_iters == 7
    assert cfg.work_dir == osp.join('./work_dirs', 'faster_rcnn_tiny')


def test_amp_rejects_bad_dtype():
    from ovkit.compat.amp import OVKitCPUAmpOptimWrapper
    with pytest.raises(ValueError, match='bfloat16 or float16'):
        OVKitCPUAmpOptimWrapper(dtype='float64', optimizer=torch.optim.SGD(
            torch.nn.Linear(1, 1).parameters(), lr=0.1))
