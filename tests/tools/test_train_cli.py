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


def test_test_py_checks_the_out_suffix_before_building_anything(capsys, tmp_path):
    from ovkit.tools import test
    with pytest.raises(SystemExit) as exc:
        test.parse_args(['nowhere.py', 'nowhere.pth', '--out', str(tmp_path / 'preds.json')])
    assert exc.value.code == 2
    assert 'must end in .pkl or .pickle' in capsys.readouterr().err
    assert test.parse_args(['c.py', 'k.pth', '--out', 'p.pickle']).out == 'p.pickle'


def test_test_py_dumps_detection_with_mmdets_metric():
    from mmdet.evaluation import DumpDetResults
    from mmengine.config import Config
    from mmengine.evaluator import DumpResults

    from ovkit.tools import test
    det = test.dump_metric(Config(dict(default_scope='mmdet')), 'a.pkl')
    assert isinstance(det, DumpDetResults)
    other = test.dump_metric(Config(dict(default_scope='mmpretrain')), 'a.pkl')
    assert type(other) is DumpResults
