# Causal TDE (context motifs, sum fusion), PredCls, on shapes scene graphs: the VG150 code path
# at CPU scale (CI). Trained on the factual output, tested with the total direct effect:
#   python tools/data/make_shapes.py --out data/shapes --kinds vg150
#   tools/dist_train.sh configs/sgg/causal-motifs-sum-tde_r18-fpn-tiny_predcls_shapes-vg150.py 2
#   tools/test.py configs/sgg/causal-motifs-sum-tde_r18-fpn-tiny_predcls_shapes-vg150.py \
#       work_dirs/causal-motifs-sum-tde_r18-fpn-tiny_predcls_shapes-vg150/iter_200.pth \
#       [--cfg-options model.relation_head.predictor.effect_type=none|TDE|NIE|TE]
_base_ = ['./motifs_r18-fpn-tiny_predcls_shapes-vg150.py']
model = dict(relation_head=dict(predictor=dict(
    type='CausalAnalysisPredictor', context_layer='motifs', fusion_type='sum',
    effect_type='TDE', spatial_for_vision=True,
    # SGB's 5e-4 averages over ~50k iterations; a few hundred need a faster average
    average_ratio=0.02)))
# The frequency branch is a lookup table trained on its own (auxiliary loss): at SGB's learning
# rate it needs SGB's tens of thousands of iterations, here it gets a larger one.
# Four losses through the shared context: at the tiny configs' lr 0.04 the ReLUs after post_cat
# and the spatial MLP die within a few hundred iterations (the context branch, hence TDE, then
# outputs a constant); 0.01 keeps them alive.
optim_wrapper = dict(optimizer=dict(lr=0.01),
                     paramwise_cfg=dict(custom_keys={'freq_bias': dict(lr_mult=20.0)}))
custom_hooks = [dict(type='SGGStatisticsHook'),
                dict(type='CausalEffectHook', val_effect_type='none')]
