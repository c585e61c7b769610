# Causal TDE (Tang et al., CVPR 2020) on VG150, SGDET: detected boxes and labels.
# SGB: CausalAnalysisPredictor, CONTEXT_LAYER motifs, FUSION_TYPE sum, SPATIAL_FOR_VISION on,
# with configs/e2e_relation_X_101_32_8_FPN_1x.yaml and its README command. Trained on the
# factual output (SGB's EFFECT_TYPE none, also what validation picks the best checkpoint on);
# tested with the total direct effect. Other effects / contexts / fusions of the same run:
#   tools/test.py CONFIG CKPT --cfg-options model.relation_head.predictor.effect_type=NIE
#   (none | TDE | NIE | TE); context_layer=vctree|vtranse, fusion_type=gate train other models.
#   tools/dist_train.sh configs/sgg/causal-motifs-sum-tde_x101-fpn_sgdet_vg150.py 2
#   tools/test.py configs/sgg/causal-motifs-sum-tde_x101-fpn_sgdet_vg150.py \
#       work_dirs/<run>/best_sgg_R@100_iter_<N>.pth
_base_ = [
    './_base_/models/sgg_x101-fpn_vg150.py',
    './_base_/datasets/vg150.py',
    './_base_/schedules/sgb_relation_50k.py',
    './_base_/sgg_runtime.py',
]
mode = 'sgdet'
model = dict(
    mode=mode,
    relation_head=dict(predictor=dict(
        type='CausalAnalysisPredictor', context_layer='motifs', fusion_type='sum',
        effect_type='TDE', spatial_for_vision=True)))
val_evaluator = dict(mode=mode)
test_evaluator = val_evaluator
# validation during training on the factual output, as SGB
custom_hooks = [dict(type='SGGStatisticsHook'),
                dict(type='CausalEffectHook', val_effect_type='none')]
