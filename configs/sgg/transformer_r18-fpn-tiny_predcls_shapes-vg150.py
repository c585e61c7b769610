# SGB's Transformer predictor, PredCls, on shapes scene graphs: the VG150 code path at CPU
# scale (CI): SGB's 4 object / 2 edge layers, at width 64 with 4 heads.
#   python tools/data/make_shapes.py --out data/shapes --kinds vg150
#   tools/dist_train.sh configs/sgg/transformer_r18-fpn-tiny_predcls_shapes-vg150.py 2
#   tools/test.py configs/sgg/transformer_r18-fpn-tiny_predcls_shapes-vg150.py \
#       work_dirs/transformer_r18-fpn-tiny_predcls_shapes-vg150/iter_200.pth
_base_ = ['./motifs_r18-fpn-tiny_predcls_shapes-vg150.py']
model = dict(relation_head=dict(predictor=dict(
    _delete_=True, type='TransformerPredictor', glove_dir=None, embed_dim=32, hidden_dim=64,
    pooling_dim={{_base_.mlp_dim}}, num_obj_layers=4, num_edge_layers=2, num_heads=4,
    ffn_dim=128, dropout=0.1)))
# SGB trains the Transformer with a 10x smaller learning rate than the other predictors
optim_wrapper = dict(optimizer=dict(lr=0.004))
