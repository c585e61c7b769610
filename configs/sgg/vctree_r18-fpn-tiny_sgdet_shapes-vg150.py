# VCTree, SGDet: boxes and labels from the frozen detector;
# shapes scene graphs (CI scale).
#   python tools/data/make_shapes.py --out data/shapes --kinds vg150
#   tools/dist_train.sh configs/sgg/faster-rcnn_r18-fpn-tiny_shapes-vg150.py 2   # the detector
#   tools/dist_train.sh configs/sgg/vctree_r18-fpn-tiny_sgdet_shapes-vg150.py 2
#   tools/test.py configs/sgg/vctree_r18-fpn-tiny_sgdet_shapes-vg150.py \
#       work_dirs/vctree_r18-fpn-tiny_sgdet_shapes-vg150/iter_200.pth
_base_ = ['./vctree_r18-fpn-tiny_predcls_shapes-vg150.py']
detector_checkpoint = 'work_dirs/faster-rcnn_r18-fpn-tiny_shapes-vg150/iter_400.pth'
mode = 'sgdet'
model = dict(mode=mode, detector_checkpoint=detector_checkpoint)
val_evaluator = dict(mode=mode)
test_evaluator = val_evaluator
