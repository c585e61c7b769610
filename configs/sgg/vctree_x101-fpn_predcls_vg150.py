# VCTree on VG150, PREDCLS: ground-truth boxes and labels.
# SGB: VCTreePredictor with configs/e2e_relation_X_101_32_8_FPN_1x.yaml (CONTEXT_HIDDEN_DIM 512,
# POOLING_ALL_LEVELS on) and its README command (12 images per iteration).
#   tools/dist_train.sh configs/sgg/vctree_x101-fpn_predcls_vg150.py 2
#   tools/test.py configs/sgg/vctree_x101-fpn_predcls_vg150.py \
#       work_dirs/<run>/best_sgg_R@100_iter_<N>.pth
_base_ = [
    './_base_/models/sgg_x101-fpn_vg150.py',
    './_base_/datasets/vg150.py',
    './_base_/schedules/sgb_relation_50k.py',
    './_base_/sgg_runtime.py',
]
mode = 'predcls'
# the base's predictor settings (GloVe dir, 200-d embeddings, hidden 512, pooling 4096,
# dropout 0.2, one layer each) carry over to the VCTree predictor
model = dict(mode=mode, relation_head=dict(predictor=dict(type='VCTreePredictor')))
val_evaluator = dict(mode=mode)
test_evaluator = val_evaluator
