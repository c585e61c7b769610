# SGB's Transformer predictor, SGDet, on shapes scene graphs: boxes from the tiny detector
# trained first with faster-rcnn_r18-fpn-tiny_shapes-vg150.py (the checkpoint path below).
#   tools/train.py configs/sgg/faster-rcnn_r18-fpn-tiny_shapes-vg150.py
#   tools/dist_train.sh configs/sgg/transformer_r18-fpn-tiny_sgdet_shapes-vg150.py 2
#   python tools/sgg_infer.py configs/sgg/transformer_r18-fpn-tiny_sgdet_shapes-vg150.py \
#       work_dirs/transformer_r18-fpn-tiny_sgdet_shapes-vg150/iter_200.pth MY_IMAGES --out OUT
_base_ = ['./transformer_r18-fpn-tiny_predcls_shapes-vg150.py']
detector_checkpoint = 'work_dirs/faster-rcnn_r18-fpn-tiny_shapes-vg150/iter_400.pth'
mode = 'sgdet'
model = dict(mode=mode, detector_checkpoint=detector_checkpoint)
val_evaluator = dict(mode=mode)
test_evaluator = val_evaluator
