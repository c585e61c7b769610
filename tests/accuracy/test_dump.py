"""Dumping plain nn.Modules: naming, manifest, nested outputs, in-place ops, settings, ONNX."""
import os
import re

import numpy as np
import pytest
import torch
from torch import nn

from ovkit.accuracy.compare import compare_dumps
from ovkit.accuracy.dump import dump_module, flatten_tensors, parse_setting
from ovkit.accuracy.manifest import AccuracyError, load_dump


class Net(nn.Module):
    """conv/bn/in-place relu, a module called twice, nested dict/tuple outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.block(self.block(x))  # same module, two calls
        logits = self.fc(self.pool(x).flatten(1))
        return dict(logits=logits, aux=(x, [logits.softmax(-1)]))


@pytest.fixture(scope='module')
def net():
    torch.manual_seed(0)
    m = Net().eval()
    with torch.no_grad():  # non-trivial BN statistics
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope='module')
def x():
    return torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope='module')
def dumps(net, x, tmp_path_factory):
    root = tmp_path_factory.mktemp('dumps')
    out = {}
    for s in ('fp32', 'bf16', 'fp16', 'onnx'):
        out[s] = dump_module(net, x, str(root / s), s)
    out['fp32_again'] = dump_module(net, x, str(root / 'fp32_again'), 'fp32')
    out['inputs'] = dump_module(net, x, str(root / 'inputs'), 'fp32', dump_inputs=True)
    return out


def test_names_order_and_files(dumps):
    d = dumps['fp32']
    assert [e.label for e in d.entries] == [
        '__input__[0]', 'conv[0]', 'bn[0]', 'relu[0]', 'block[0]', 'block#1[0]', 'pool[0]',
        'fc[0]', '__output__[0]', '__output__[1]', '__output__[2]']
    assert [e.path for e in d.entries if e.kind == 'model_output'] == [
        "['logits']", "['aux'][0]", "['aux'][1][0]"]
    for e in d.entries:
        assert re.fullmatch(r'[\w.]+\.\d+\.\d+\.npy', e.file), e.file
        assert os.path.exists(os.path.join(d.root, e.file))
    stamps = [int(e.file.split('.')[-2]) for e in d.entries]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert d.meta['setting']['name'] == 'fp32' and d.meta['leaf_modules'] == 6
    assert d.entries[1].shape == [2, 8, 12, 12] and d.entries[1].module_type == 'Conv2d'


def test_values_are_the_module_outputs(dumps, net, x):
    """Saved values equal an independent re-computation, before in-place ops overwrote them."""
    d = dumps['fp32']
    saved = {e.label: np.load(os.path.join(d.root, e.file)) for e in d.entries}
    with torch.no_grad():
        conv = net.conv(x)
        bn = net.bn(conv)
        relu = torch.relu(bn)
        b1 = net.block(relu)
        b2 = net.block(b1)
    np.testing.assert_allclose(saved['conv[0]'], conv.numpy(), rtol=1e-6, atol=1e-6)
    assert (saved['bn[0]'] < 0).any(), 'bn output must be saved before the in-place ReLU'
    np.testing.assert_allclose(saved['bn[0]'], bn.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(saved['relu[0]'], relu.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(saved['block#1[0]'], b2.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(saved['__input__[0]'], x.numpy())


def test_dump_inputs(dumps, x):
    d = dumps['inputs']
    inputs = [e for e in d.entries if e.kind == 'input']
    assert [e.label for e in inputs][:3] == ['conv.input[0]', 'bn.input[0]', 'relu.input[0]']
    assert all('.input.' in e.file for e in inputs)
    conv_in = np.load(os.path.join(d.root, inputs[0].file))
    np.testing.assert_array_equal(conv_in, x.numpy())
    # the in-place ReLU's input was saved before it was overwritten
    relu_in = np.load(os.path.join(d.root, inputs[2].file))
    assert (relu_in < 0).any()


def test_two_fp32_runs_are_identical(dumps):
    res = compare_dumps(dumps['fp32'].root, dumps['fp32_again'].root)
    for r in res.rows:
        assert r['cosine_similarity'] == 1.0 and r['max_absolute_error'] == 0.0, r['name']
        assert r['reason'] == ''


@pytest.mark.parametrize('setting,dtype', [('bf16', 'torch.bfloat16'), ('fp16', 'torch.float16')])
def test_low_precision_settings(dumps, setting, dtype):
    d = dumps[setting]
    conv = next(e for e in d.entries if e.name == 'conv')
    assert conv.dtype == dtype
    saved = np.load(os.path.join(d.root, conv.file))
    assert saved.dtype == (np.float32 if setting == 'bf16' else np.float16)
    if setting == 'bf16':  # bfloat16 saved losslessly as float32: low 16 bits are zero
        assert not (saved.view(np.uint32) & 0xFFFF).any()
    res = compare_dumps(dumps['fp32'].root, d.root)
    rows = {r['name'] + f'#{r["call"]}[{r["index"]}]': r for r in res.rows}
    assert rows['__input__#0[0]']['cosine_similarity'] == 1.0
    assert rows['conv#0[0]']['max_absolute_error'] > 0  # really ran in low precision
    for r in res.rows:
        assert 0.99 < r['cosine_similarity'] <= 1.0, r['name']
        assert r['reason'] == ''


def test_onnx_matches_eager(dumps):
    eager, onnx = dumps['fp32'], dumps['onnx']
    assert [e.key for e in onnx.entries] == [e.key for e in eager.entries]
    assert os.path.exists(os.path.join(onnx.root, 'model.onnx'))
    res = compare_dumps(eager.root, onnx.root)
    for r in res.rows:
        assert r['reason'] == '', (r['name'], r['reason'])
        assert r['cosine_similarity'] > 0.99999, r['name']
        assert r['max_absolute_error'] < 1e-4, r['name']
    # the BN output was exposed before the in-place ReLU, as in eager mode
    bn = next(e for e in onnx.entries if e.name == 'bn')
    assert (np.load(os.path.join(onnx.root, bn.file)) < 0).any()


def test_onnx_with_module_inputs(net, x, tmp_path):
    d = dump_module(net, x, str(tmp_path / 'o'), 'onnx', dump_inputs=True)
    e = dump_module(net, x, str(tmp_path / 'e'), 'fp32', dump_inputs=True)
    assert [t.key for t in d.entries] == [t.key for t in e.entries]


def test_flatten_data_samples_keeps_predictions():
    from mmengine.structures import BaseDataElement, InstanceData
    sample = BaseDataElement()
    sample.gt_instances = InstanceData(bboxes=torch.zeros(0, 4))
    sample.pred_instances = InstanceData(bboxes=torch.ones(3, 4), scores=torch.ones(3))
    sample.set_metainfo(dict(img_shape=(8, 8)))
    flat = flatten_tensors([sample, {'k': (torch.zeros(1), 'text', None)}])
    paths = [p for p, _ in flat]
    assert paths[-1] == "[1]['k'][0]"
    assert paths[:2] == ['[0].pred_instances.bboxes', '[0].pred_instances.scores']
    plain = BaseDataElement()
    plain.feat = torch.ones(2)
    assert [p for p, _ in flatten_tensors(plain)] == ['.feat']


def test_data_sample_outputs_are_dumped(tmp_path):
    from mmengine.structures import BaseDataElement, InstanceData

    class Det(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(4, 5)

        def forward(self, x):
            y = self.head(x)
            s = BaseDataElement()
            s.pred_instances = InstanceData(bboxes=y[:, :4], scores=y[:, 4])
            return [s]

    d = dump_module(Det(), torch.randn(3, 4), str(tmp_path / 'd'))
    outs = [e for e in d.entries if e.kind == 'model_output']
    assert [e.path for e in outs] == ['[0].pred_instances.bboxes', '[0].pred_instances.scores']
    assert outs[0].shape == [3, 4] and outs[1].shape == [3]


def test_forward_failure_leaves_partial_dump(tmp_path):
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError('no kernel for this dtype')

    m = nn.Sequential(nn.Linear(4, 4), Boom(), nn.Linear(4, 4))
    with pytest.raises(AccuracyError, match=r"failed in module '1'.*no kernel.*partial"):
        dump_module(m, torch.randn(2, 4), str(tmp_path / 'p'))
    d = load_dump(str(tmp_path / 'p'))
    assert [e.name for e in d.entries] == ['__input__', '0']
    assert 'no kernel' in d.meta['error']


def test_settings_and_bad_arguments(tmp_path, net, x):
    assert parse_setting('ort').name == 'onnx' and parse_setting('cpu').name == 'fp32'
    with pytest.raises(AccuracyError, match='unknown setting.*fp32'):
        parse_setting('int4')
    if not torch.cuda.is_available():
        with pytest.raises(AccuracyError, match='needs a CUDA GPU'):
            parse_setting('cuda-fp16')
    dump_module(net, x, str(tmp_path / 'd'))
    with pytest.raises(AccuracyError, match='--overwrite'):
        dump_module(net, x, str(tmp_path / 'd'))
    d = dump_module(net, x, str(tmp_path / 'd'), include=r'^(conv|fc)$', overwrite=True)
    assert [e.name for e in d.entries] == ['__input__', 'conv', 'fc', '__output__',
                                           '__output__', '__output__']


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
def test_cuda_settings(net, x, tmp_path):
    ref = dump_module(net, x, str(tmp_path / 'cpu'))
    for s in ('cuda', 'cuda-fp16', 'cuda-bf16'):
        d = dump_module(net, x, str(tmp_path / s), s)
        res = compare_dumps(ref.root, d.root)
        assert all(r['cosine_similarity'] > 0.99 for r in res.rows), s
    assert next(net.parameters()).device.type == 'cpu'  # model moved back
