# The frequency-only baseline, PredCls, on shapes scene graphs: predicate = f(subject class,
# object class) from the training statistics, no image and no box geometry. What a model must
# beat to show it learns (motifs_r18-fpn-tiny_predcls_shapes-vg150.py).
#   tools/train.py configs/sgg/freq_r18-fpn-tiny_predcls_shapes-vg150.py
_base_ = ['./motifs_r18-fpn-tiny_predcls_shapes-vg150.py']
model = dict(relation_head=dict(predictor=dict(_delete_=True, type='FrequencyPredictor')))
# The bias table starts from SGB's statistics, which keep only relations whose boxes overlap
# (most shapes predicates never do) and then trains into p(predicate | labels) on the sampled
# pairs. A lookup row gets a tiny share of each batch's gradient, hence the large lr: this
# baseline must reach its best, not be left half-trained.
optim_wrapper = dict(optimizer=dict(lr=1.0))
