# Iterative Message Passing, PredCls, on shapes scene graphs (CI scale; no frequency bias).
#   tools/dist_train.sh configs/sgg/imp_r18-fpn-tiny_predcls_shapes-vg150.py 2
_base_ = ['./motifs_r18-fpn-tiny_predcls_shapes-vg150.py']
model = dict(relation_head=dict(predictor=dict(
    _delete_=True, type='IMPPredictor', hidden_dim=64, pooling_dim={{_base_.mlp_dim}})))
