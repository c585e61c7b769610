# Neural Motifs on VG150, SGCLS: ground-truth boxes, predicted labels.
# SGB: MotifPredictor with configs/e2e_relation_X_101_32_8_FPN_1x.yaml and its README
# command (12 images per iteration).
#   tools/dist_train.sh configs/sgg/motifs_x101-fpn_sgcls_vg150.py 2
#   tools/test.py configs/sgg/motifs_x101-fpn_sgcls_vg150.py \
#       work_dirs/<run>/best_sgg_R@100_iter_<N>.pth
_base_ = [
    './_base_/models/sgg_x101-fpn_vg150.py',
    './_base_/datasets/vg150.py',
    './_base_/schedules/sgb_relation_50k.py',
    './_base_/sgg_runtime.py',
]
mode = 'sgcls'
model = dict(mode=mode)
val_evaluator = dict(mode=mode)
test_evaluator = val_evaluator
