"""The .pdparams converter on files written here with PaddleVideo's key list and shapes."""
import pickle

import numpy as np
import pytest
import torch
from mmaction.registry import MODELS

from ovkit.pptsm.convert import convert_pdparams, load_pdparams, main

STAGES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
BN = ('weight', 'bias', '_mean', '_variance')


def paddle_resnet_vd_keys(depth, width=64):
    """(name, shape) of PaddleVideo's ResNetTweaksTSM bottleneck backbone, in its order.

    ``width`` 64 is PaddleVideo's; smaller ones keep every name at a fraction of the size."""
    out = []

    def conv_bn(name, cout, cin, k):
        out.append((f'{name}._conv.weight', (cout, cin, k, k)))
        out.extend((f'{name}._batch_norm.{leaf}', (cout, )) for leaf in BN)

    half = width // 2
    conv_bn('conv1_1', half, 3, 3)
    conv_bn('conv1_2', half, half, 3)
    conv_bn('conv1_3', width, half, 3)
    cin = width
    for s, blocks in enumerate(STAGES[depth]):
        planes = width * 2**s
        for i in range(blocks):
            name = f'bb_{s}_{i}'
            conv_bn(f'{name}.conv0', planes, cin, 1)
            conv_bn(f'{name}.conv1', planes, planes, 3)
            conv_bn(f'{name}.conv2', planes * 4, planes, 1)
            if i == 0:
                conv_bn(f'{name}.short', planes * 4, cin, 1)
            cin = planes * 4
    return out


def write_pdparams(path, keys, seed=0):
    """A .pdparams as paddle.save writes it: pickled dict of arrays + structured-name table."""
    rng = np.random.default_rng(seed)
    params = {k: rng.random(shape, dtype=np.float32) - 0.5 for k, shape in keys}
    blob = dict(params)
    blob['StructuredToParameterName@@'] = {k: f'param_{i}' for i, k in enumerate(params)}
    with open(path, 'wb') as f:
        pickle.dump(blob, f, protocol=2)
    return params


def recognizer_keys(depth, num_classes, width=64):
    keys = [(f'backbone.{k}', s) for k, s in paddle_resnet_vd_keys(depth, width)]
    feat = 32 * width
    return keys + [('head.fc.weight', (feat, num_classes)), ('head.fc.bias', (num_classes, ))]


def build_recognizer(num_classes, depth=50):
    from mmengine.registry import init_default_scope

    import ovkit.pptsm  # noqa: F401
    init_default_scope('mmaction')
    return MODELS.build(dict(
        type='Recognizer2D',
        backbone=dict(type='ResNetTweaksTSM', depth=depth, num_segments=8),
        cls_head=dict(type='TSMHead', num_classes=num_classes, in_channels=2048,
                      num_segments=8, init_std=0.01)))


def test_full_key_list_has_the_design_counts():
    keys = recognizer_keys(50, 400)
    assert len(keys) == 277
    assert sum(k.endswith('._mean') for k, _ in keys) == 55


def test_round_trip_every_tensor_lands_with_equal_values(tmp_path):
    params = write_pdparams(tmp_path / 'pptsm.pdparams', recognizer_keys(50, 101))
    loaded = load_pdparams(str(tmp_path / 'pptsm.pdparams'))
    assert set(loaded) == set(params)  # the structured-name table is dropped
    state, report = convert_pdparams(loaded)
    assert not report['unknown'] and not report['dropped']
    assert report['depth'] == 50 and report['num_classes'] == 101
    assert len(report['mapped']) == 277 and len(report['added']) == 55

    model = build_recognizer(101)
    result = model.load_state_dict(state, strict=True)  # every model tensor is provided
    assert not result.missing_keys and not result.unexpected_keys
    own = model.state_dict()
    for paddle_key, new_key in report['mapped'].items():
        expected = params[paddle_key].T if paddle_key == 'head.fc.weight' else params[paddle_key]
        assert np.array_equal(own[new_key].numpy(), expected), (paddle_key, new_key)
    # Spot checks of the name rules, written out independently of the converter.
    m = report['mapped']
    assert m['backbone.conv1_2._batch_norm._variance'] == 'backbone.stem.1.bn.running_var'
    assert m['backbone.bb_0_0.short._conv.weight'] == 'backbone.layer1.0.downsample.0.weight'
    assert m['backbone.bb_1_0.short._conv.weight'] == 'backbone.layer2.0.downsample.1.weight'
    assert m['backbone.bb_3_0.short._batch_norm._mean'] == \
        'backbone.layer4.0.downsample.2.running_mean'
    assert m['backbone.bb_2_5.conv1._conv.weight'] == 'backbone.layer3.5.conv2.weight'
    assert m['head.fc.weight'] == 'cls_head.fc_cls.weight'
    assert own['cls_head.fc_cls.weight'].shape == (101, 2048)


def test_distillation_and_imagenet_files(tmp_path):
    """At 1/8 width (every name, 1/64 of the bytes); the round trip above has full shapes."""
    keys = [(f'Student.{k}', s) for k, s in recognizer_keys(50, 400, width=8)]
    keys += [(f'Teacher.{k}', s) for k, s in recognizer_keys(50, 400, width=8)[:5]]
    write_pdparams(tmp_path / 'distill.pdparams', keys)
    state, report = convert_pdparams(load_pdparams(str(tmp_path / 'distill.pdparams')))
    assert len(report['mapped']) == 277 and not report['unknown']
    assert set(report['dropped'].values()) == {'distillation teacher'}

    imagenet = paddle_resnet_vd_keys(50, width=8) + [('out.weight', (256, 1000)),
                                                     ('out.bias', (1000, ))]
    params = write_pdparams(tmp_path / 'ResNet50_vd.pdparams', imagenet, seed=1)
    state, report = convert_pdparams(load_pdparams(str(tmp_path / 'ResNet50_vd.pdparams')))
    assert len(report['mapped']) == 275 and report['num_classes'] is None
    assert set(report['dropped']) == {'out.weight', 'out.bias'}
    assert all(k.startswith('backbone.') for k in state)
    # The backbone loads it through model.backbone.pretrained.
    ckpt = tmp_path / 'r50vd.pth'
    torch.save({'state_dict': state}, ckpt)
    from ovkit.pptsm import ResNetTweaksTSM
    backbone = ResNetTweaksTSM(depth=50, base_channels=8, pretrained=str(ckpt))
    backbone.init_weights()
    assert np.array_equal(backbone.layer3[2].conv2.weight.detach().numpy(),
                          params['bb_2_2.conv1._conv.weight'])


def test_cli_writes_a_checkpoint_and_refuses_unknown_keys(tmp_path, capsys):
    """The tool's main() in-process (test_e2e runs tools/model_converters/pptsm_paddle.py)."""
    write_pdparams(tmp_path / 'a.pdparams', recognizer_keys(50, 10, width=8))
    assert main([str(tmp_path / 'a.pdparams'), str(tmp_path / 'a.pth')]) == 0
    out = capsys.readouterr().out
    assert '277 tensors mapped' in out and 'depth 50' in out and '10 classes' in out
    ckpt = torch.load(tmp_path / 'a.pth', weights_only=True)
    assert ckpt['meta']['depth'] == 50 and len(ckpt['state_dict']) == 277 + 55

    keys = recognizer_keys(50, 10, width=8) + [('backbone.extra.weight', (3, ))]
    write_pdparams(tmp_path / 'b.pdparams', keys)
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / 'b.pdparams'), str(tmp_path / 'b.pth')])
    assert 'not PP-TSM' in str(err.value) and not (tmp_path / 'b.pth').exists()
    assert main([str(tmp_path / 'b.pdparams'), str(tmp_path / 'b.pth'), '--allow-unknown']) == 0

    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / 'missing.pdparams'), str(tmp_path / 'c.pth')])
    assert 'missing.pdparams' in str(err.value) and 'ovkit never downloads' in str(err.value)
    (tmp_path / 'junk.pdparams').write_bytes(b'not a pickle')
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / 'junk.pdparams'), str(tmp_path / 'c.pth')])
    assert 'junk.pdparams' in str(err.value)
