# VCTree, PredCls, on shapes scene graphs: the VG150 code path at CPU scale (CI).
#   python tools/data/make_shapes.py --out data/shapes --kinds vg150
#   tools/dist_train.sh configs/sgg/vctree_r18-fpn-tiny_predcls_shapes-vg150.py 2
#   tools/test.py configs/sgg/vctree_r18-fpn-tiny_predcls_shapes-vg150.py \
#       work_dirs/vctree_r18-fpn-tiny_predcls_shapes-vg150/iter_200.pth
# The tiny Motifs config with the VCTree predictor (same context sizes, random class vectors,
# fast box BatchNorm statistics).
_base_ = ['./motifs_r18-fpn-tiny_predcls_shapes-vg150.py']
model = dict(relation_head=dict(predictor=dict(type='VCTreePredictor')))
