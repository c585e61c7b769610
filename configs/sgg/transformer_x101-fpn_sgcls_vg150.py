# SGB's Transformer predictor on VG150, SGCLS: ground-truth boxes, predicted labels.
# SGB: TransformerPredictor (4 object / 2 edge layers, 8 heads, d_k 64, FFN 2048, dropout 0.1)
# with configs/e2e_relation_X_101_32_8_FPN_1x.yaml and the README's Transformer schedule
# (lr 0.001 per image, 16 images, 16k iterations, steps at 10k).
#   tools/dist_train.sh configs/sgg/transformer_x101-fpn_sgcls_vg150.py 2
#   tools/test.py configs/sgg/transformer_x101-fpn_sgcls_vg150.py \
#       work_dirs/<run>/best_sgg_R@100_iter_<N>.pth
_base_ = [
    './_base_/models/sgg_x101-fpn_vg150.py',
    './_base_/datasets/vg150.py',
    './_base_/schedules/sgb_transformer_16k.py',
    './_base_/sgg_runtime.py',
]
mode = 'sgcls'
model = dict(
    mode=mode,
    relation_head=dict(predictor=dict(
        type='TransformerPredictor', num_obj_layers=4, num_edge_layers=2, num_heads=8,
        ffn_dim=2048, dropout=0.1)))
val_evaluator = dict(mode=mode)
test_evaluator = val_evaluator
# SGB: 16 images per iteration = 8 per process on 2 GPUs
train_dataloader = dict(batch_size=8)
