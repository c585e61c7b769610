# Iterative Message Passing on VG150, PREDCLS: ground-truth boxes and labels.
# SGB: IMPPredictor (no frequency bias) with configs/e2e_relation_X_101_32_8_FPN_1x.yaml;
# as SGB's relation_train_net.py, the box and union-box MLPs train 10x slower.
#   tools/dist_train.sh configs/sgg/imp_x101-fpn_predcls_vg150.py 2
_base_ = [
    './_base_/models/sgg_x101-fpn_vg150.py',
    './_base_/datasets/vg150.py',
    './_base_/schedules/sgb_relation_50k.py',
    './_base_/sgg_runtime.py',
]
mode = 'predcls'
model = dict(
    mode=mode,
    relation_head=dict(predictor=dict(
        _delete_=True, type='IMPPredictor', hidden_dim=512, pooling_dim=4096,
        num_iter=3, later_nms_thr=0.5)))
val_evaluator = dict(mode=mode)
test_evaluator = val_evaluator
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        'relation_head.box_feature_extractor': dict(lr_mult=0.1),
        'relation_head.union_feature_extractor.roi_extractor': dict(lr_mult=0.1),
        'relation_head.union_feature_extractor.fcs': dict(lr_mult=0.1)}))
