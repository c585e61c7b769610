# Neural Motifs, PredCls, on shapes scene graphs: the VG150 code path at CPU scale (CI).
#   python tools/data/make_shapes.py --out data/shapes --kinds vg150
#   tools/dist_train.sh configs/sgg/motifs_r18-fpn-tiny_predcls_shapes-vg150.py 2
#   tools/test.py configs/sgg/motifs_r18-fpn-tiny_predcls_shapes-vg150.py \
#       work_dirs/motifs_r18-fpn-tiny_predcls_shapes-vg150/iter_200.pth
# The frozen detector may stay random here: the spatial predicates are read from the boxes.
_base_ = [
    './_base_/models/sgg_r18-fpn_tiny.py',
    './_base_/datasets/shapes_vg150.py',
    './_base_/schedules/sgg_tiny.py',
    './_base_/sgg_runtime.py',
]
mode = 'predcls'
model = dict(mode=mode)
val_evaluator = dict(mode=mode)
test_evaluator = val_evaluator
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=100, max_keep_ckpts=2, save_best=None))
log_processor = dict(window_size=20)
randomness = dict(seed=0)
