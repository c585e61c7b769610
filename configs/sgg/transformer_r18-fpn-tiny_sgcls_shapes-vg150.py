# SGB's Transformer predictor, SGCls: ground-truth boxes, object labels from the frozen
# detector refined by the predictor; shapes scene graphs (CI scale).
#   python tools/data/make_shapes.py --out data/shapes --kinds vg150
#   tools/dist_train.sh configs/sgg/faster-rcnn_r18-fpn-tiny_shapes-vg150.py 2   # the detector
#   tools/dist_train.sh configs/sgg/transformer_r18-fpn-tiny_sgcls_shapes-vg150.py 2
#   tools/test.py configs/sgg/transformer_r18-fpn-tiny_sgcls_shapes-vg150.py \
#       work_dirs/transformer_r18-fpn-tiny_sgcls_shapes-vg150/iter_200.pth
_base_ = ['./transformer_r18-fpn-tiny_predcls_shapes-vg150.py']
detector_checkpoint = 'work_dirs/faster-rcnn_r18-fpn-tiny_shapes-vg150/iter_400.pth'
mode = 'sgcls'
model = dict(mode=mode, detector_checkpoint=detector_checkpoint)
val_evaluator = dict(mode=mode)
test_evaluator = val_evaluator
