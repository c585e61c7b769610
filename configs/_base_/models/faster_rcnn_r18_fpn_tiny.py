# A deliberately tiny Faster R-CNN (ResNet-18 at 1/4 width, 32-channel FPN) that trains on a CPU
# in seconds: mmdet's faster-rcnn_r50_fpn base, only narrower and randomly initialised.
_base_ = 'mmdet::_base_/models/faster-rcnn_r50_fpn.py'

model = dict(
    backbone=dict(
        depth=18,
        base_channels=16,
        frozen_stages=-1,
        norm_eval=False,
        init_cfg=None),  # no ImageNet download: the tiny model trains from scratch
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(
        in_channels=32,
        feat_channels=32,
        anchor_generator=dict(scales=[4])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64)),
    train_cfg=dict(
        rpn=dict(sampler=dict(num=128)),
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(score_thr=0.05, max_per_img=50)))
