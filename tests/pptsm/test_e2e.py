"""PP-TSM through the real tools on motion-only shapes videos: 2-process training with a
corrupt video in the list, test.py top-1/top-5, resume, video_infer, the shift against its
ablation; converted Paddle weights load into the UCF101 config."""
import glob
import os.path as osp
import re
import sys

import pytest

from tests.conftest import REPO, run_cmd
from tests.pptsm.test_convert import recognizer_keys, write_pdparams

pytestmark = pytest.mark.e2e
CFG_DIR = osp.join(REPO, 'configs', 'pptsm')
TINY = osp.join(CFG_DIR, 'pptsm_tiny-r18_2xb4-1x1x8-24e_shapes-video.py')
NOSHIFT = osp.join(CFG_DIR, 'pptsm_tiny-r18-noshift_2xb4-1x1x8-24e_shapes-video.py')
UCF101 = osp.join(CFG_DIR, 'pptsm_k400-distill-pretrained-r50_1xb16-1x1x8-30e_ucf101-rgb.py')
# One thread per process: tiny models gain nothing from more, and a busy machine loses a lot.
ENV = {'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def ws(tmp_path_factory):
    """A workspace with data/shapes/video and a corrupt video listed for training."""
    ws = tmp_path_factory.mktemp('pptsm')
    run_cmd([sys.executable, osp.join(REPO, 'tools', 'data', 'make_shapes.py'), '--out',
             'data/shapes', '--kinds', 'video'], cwd=ws)
    root = ws / 'data' / 'shapes' / 'video'
    (root / 'videos' / 'move_up' / 'broken.avi').write_bytes(b'\x00not a video' * 64)
    with open(root / 'train_list_nosuffix.txt', 'a') as f:
        f.write('move_up/broken 0\n')  # PaddleVideo style: no suffix
    # and one in the validation list: left out of the metrics, counted in them
    (root / 'videos' / 'grow' / 'broken_val.avi').write_bytes(b'\x00not a video' * 64)
    with open(root / 'val_list.txt', 'a') as f:
        f.write('grow/broken_val.avi 2\n')
    return ws


def _train(ws, config, name):
    work = ws / 'work_dirs' / name
    # One corrupt video among 97 is just over ovkit.engine's default 1% limit.
    out = run_cmd(['bash', osp.join(REPO, 'tools', 'dist_train.sh'), config, '2',
                   '--work-dir', str(work), '--cfg-options',
                   'default_hooks.bad_samples.max_skip_ratio=0.05'], cwd=ws, env=ENV)
    return work, out


def _top1(out, where):
    """The last ``acc/top1`` of a log; ``where``: 'test' or 'val' lines."""
    top1 = re.findall(rf'Epoch\({where}\).*acc/top1: ([0-9.]+)', out)
    assert top1 and 'acc/top5:' in out, out[-3000:]
    return float(top1[-1])


def _skipped_in_metrics(out):
    """``acc/skipped_samples`` of every evaluation in ``out``."""
    return [float(v) for v in re.findall(r'acc/skipped_samples: ([0-9.]+)', out)]


@pytest.fixture(scope='module')
def trained(ws):
    return _train(ws, TINY, 'tiny')


def test_two_process_training_skips_and_counts_the_corrupt_video(trained):
    work, out = trained
    assert 'world size 2' in out
    assert (work / 'epoch_24.pth').exists()
    # ovkit.engine's per-epoch line, summed over both processes
    lines = re.findall(r'skipped (\d+) of \d+ training samples this epoch .*', out)
    assert len(lines) == 24, out[-3000:]
    assert all('broken.avi' in line for line in re.findall(r'skipped \d+ of .*', out))
    # validation (epochs 6, 12, 18, 24): the corrupt video is left out and counted
    assert _skipped_in_metrics(out) == [1] * 4, out[-3000:]
    # (named in the log; mmengine's logger prints a repeated warning once)
    assert re.search(r'1 evaluation samples failed to load and are left out of '
                     r'AccMetric: \S*broken_val\.avi', out)
    losses = [float(v) for v in re.findall(r'\bloss: ([0-9.]+)', out)]
    assert losses[-1] < losses[0]
    assert 'precise BN: updated' in out


def test_shift_beats_its_ablation_on_motion_only_videos(ws, trained):
    work, train_out = trained
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'test.py'), TINY,
                   str(work / 'epoch_24.pth'), '--work-dir', str(ws / 'work_dirs' / 'test')],
                  cwd=ws, env=ENV)
    shift = _top1(out, 'test')
    assert _skipped_in_metrics(out) == [1] and 'broken_val.avi' in out
    # test.py (1 process) on the last checkpoint scores what the last 2-process validation did
    assert abs(shift - _top1(train_out, 'val')) < 1.5 / 48
    # The ablation's own last validation (after precise BN, as its checkpoint) is its score.
    _, noshift_out = _train(ws, NOSHIFT, 'noshift')
    noshift = _top1(noshift_out, 'val')
    print(f'shapes-video val top-1: PP-TSM {shift:.3f}, without the shift {noshift:.3f}')
    # Pairs of classes are time reversals of each other: a 2D model is capped near 0.5.
    assert noshift <= 0.6
    assert shift >= 0.6 and shift - noshift >= 0.25


def test_resume(ws, trained):
    work, _ = trained
    out = run_cmd([sys.executable, osp.join(REPO, 'tools', 'train.py'), TINY,
                   '--work-dir', str(work), '--resume', '--cfg-options',
                   'train_cfg.max_epochs=25', 'default_hooks.bad_samples.max_skip_ratio=0.05'],
                  cwd=ws, env=ENV)
    assert 'resumed epoch: 24' in out
    assert (work / 'epoch_25.pth').exists()


def test_video_infer_prints_top5_names_for_a_video_and_a_folder(ws, trained, capsys,
                                                                monkeypatch):
    work, _ = trained
    ckpt = str(work / 'epoch_24.pth')
    tool = osp.join(REPO, 'tools', 'video_infer.py')
    video = sorted(glob.glob(str(ws / 'data/shapes/video/videos/grow/grow_val_*.avi')))[0]
    out = run_cmd([sys.executable, tool, TINY, ckpt, video], cwd=ws, env=ENV)
    lines = [ln.split() for ln in out.splitlines() if re.match(r'\s+\d\. ', ln)]
    assert [ln[0] for ln in lines] == ['1.', '2.', '3.', '4.']  # 4 classes: top-4
    assert {ln[1] for ln in lines} == {'move_up', 'move_down', 'grow', 'shrink'}
    assert abs(sum(float(ln[2]) for ln in lines) - 1) < 1e-3
    monkeypatch.chdir(ws)
    # A folder, through the tool's main() (the script was run above; saves a start-up)
    from ovkit.pptsm.video_infer import main
    folder = ws / 'data/shapes/video/videos/move_down'
    capsys.readouterr()
    assert main([TINY, ckpt, str(folder), '--topk', '2']) == 0
    out = capsys.readouterr().out
    firsts = [ln.split()[1] for ln in out.splitlines() if re.match(r'\s+1\. ', ln)]
    assert len(firsts) == len(list(folder.glob('*.avi')))
    assert firsts.count('move_down') >= 0.7 * len(firsts)


def test_converted_paddle_checkpoint_loads_into_the_ucf101_config(tmp_path):
    """PaddleVideo K400 weights -> converter -> backbone of the UCF101 fine-tuning config."""
    params = write_pdparams(tmp_path / 'ppTSM_k400_uniform_distill.pdparams',
                            [(f'Student.{k}', s) for k, s in recognizer_keys(50, 400)])
    ckpt = tmp_path / 'pptsm_k400_uniform_distill.pth'
    run_cmd([sys.executable, osp.join(REPO, 'tools', 'model_converters', 'pptsm_paddle.py'),
             str(tmp_path / 'ppTSM_k400_uniform_distill.pdparams'), str(ckpt)], cwd=REPO)
    from mmaction.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    import ovkit.pptsm  # noqa: F401
    cfg = Config.fromfile(UCF101)
    cfg.model.backbone.pretrained = str(ckpt)
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
    model.init_weights()
    assert model.cls_head.fc_cls.out_features == 101
    got = model.backbone.layer4[2].conv3.weight.detach().numpy()
    assert (got == params['Student.backbone.bb_3_2.conv2._conv.weight']).all()
    bn = model.backbone.stem[0].bn.running_var.numpy()
    assert (bn == params['Student.backbone.conv1_1._batch_norm._variance']).all()
