"""TransformerPredictor: shapes, gradients, SGB's sizes, and images that never attend to each
other inside a batch."""
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS

import ovkit.sgg  # noqa: F401
from ovkit.sgg.predictors.transformer import ImageTransformerEncoder
from tests.sgg.model_helpers import NUM_CLASSES, NUM_PREDICATES, fake_proposals, fake_statistics

C1, P1 = NUM_CLASSES + 1, NUM_PREDICATES + 1
ROI, UNION = 12, 10


def build(mode, **kw):
    cfg = dict(type='TransformerPredictor', mode=mode, num_classes=NUM_CLASSES,
               num_predicates=NUM_PREDICATES, in_channels=ROI, union_channels=UNION,
               embed_dim=6, hidden_dim=8, pooling_dim=14, num_obj_layers=2, num_edge_layers=1,
               num_heads=2, ffn_dim=16, dropout=0.1)
    cfg.update(kw)
    torch.manual_seed(0)
    pred = MODELS.build(cfg)
    pred.load_statistics(fake_statistics())
    return pred


@pytest.mark.parametrize('mode', ['predcls', 'sgcls', 'sgdet'])
def test_transformer_shapes_and_gradients(mode):
    pred = build(mode).train()
    sizes = (4, 3, 2)
    props = fake_proposals(sizes, mode=mode)
    pairs = [torch.tensor([(i, j) for i in range(n) for j in range(n) if i != j]) for n in sizes]
    roi, union = torch.randn(9, ROI), torch.randn(20, UNION)
    rel_labels = [torch.randint(0, P1, (len(p),)) for p in pairs]
    obj, rel, extra = pred(props, pairs, roi, union, rel_labels=rel_labels)
    assert [o.shape for o in obj] == [(4, C1), (3, C1), (2, C1)]
    assert [r.shape for r in rel] == [(12, P1), (6, P1), (2, P1)] and extra == {}
    loss = F.cross_entropy(torch.cat(rel), torch.cat(rel_labels))
    if mode != 'predcls':
        loss = loss + F.cross_entropy(torch.cat(obj), torch.cat([p.labels for p in props]))
    loss.backward()
    missing = [n for n, p in pred.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient reaches {missing}'
    pred.eval()
    with torch.no_grad():
        obj, rel, _ = pred(props, pairs, roi, union)
    if mode != 'sgcls':
        return
    # test time: the frequency bias reads the best foreground class of the refined logits
    for lin in (pred.rel_compress, pred.ctx_compress):
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    with torch.no_grad():
        obj, rel, _ = pred(props, pairs, roi, union)
    table = torch.from_numpy(fake_statistics()['pred_dist'])
    for o, r, pr in zip(obj, rel, pairs):
        lab = o[:, 1:].argmax(1) + 1
        torch.testing.assert_close(r, table[lab[pr[:, 0]], lab[pr[:, 1]]])


def test_images_do_not_attend_to_each_other():
    torch.manual_seed(0)
    enc = ImageTransformerEncoder(2, 8, 2, 16, 0.0).eval()
    a, b = torch.randn(3, 8), torch.randn(5, 8)
    together = enc(torch.cat([a, b]), [3, 5])
    torch.testing.assert_close(together[:3], enc(a, [3]))
    torch.testing.assert_close(together[3:], enc(b, [5]))
    changed = enc(torch.cat([a, b * 3]), [3, 5])
    torch.testing.assert_close(changed[:3], together[:3])


def test_sgb_sizes_and_clear_head_error():
    pred = MODELS.build(dict(type='TransformerPredictor', mode='sgcls', num_classes=150,
                             num_predicates=50, in_channels=4096, union_channels=4096))
    ctx = pred.context_layer
    obj_layers = ctx.context_obj.encoder.layers
    assert len(obj_layers) == 4 and len(ctx.context_edge.encoder.layers) == 2
    attn = obj_layers[0].self_attn
    assert attn.num_heads == 8 and attn.head_dim == 64 and attn.embed_dim == 512
    assert obj_layers[0].linear1.out_features == 2048 and not obj_layers[0].norm_first
    assert pred.post_cat.out_features == 4096 and pred.rel_compress.out_features == 51
    with pytest.raises(ValueError, match='num_heads'):
        build('predcls', hidden_dim=10, num_heads=4)
