# PP-TSM (PaddleVideo): ResNet50-vd with a temporal shift in every block (ovkit), mmaction2's
# TSMHead (avg pool -> dropout 0.5 -> fc, mean over the 8 frames; fc init N(0, 0.01)), label
# smoothing 0.1, one mixup lambda ~ Beta(0.2, 0.2) per batch, and Paddle's normalisation
# (RGB / 255 - mean) / std written as RGB - 255 * mean over 255 * std. See docs/pptsm.md.
num_classes = 400
num_segments = 8
model = dict(
    type='Recognizer2D',
    backbone=dict(
        type='ResNetTweaksTSM', depth=50, num_segments=num_segments, pretrained=None,
        act_cfg=dict(type='LeakyReLU', negative_slope=0.01, inplace=True)),
    cls_head=dict(
        type='TSMHead', num_classes=num_classes, in_channels=2048, num_segments=num_segments,
        spatial_type='avg', consensus=dict(type='AvgConsensus', dim=1), dropout_ratio=0.5,
        init_std=0.01, label_smooth_eps=0.1, average_clips='score'),
    data_preprocessor=dict(
        type='ActionDataPreprocessor', mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], format_shape='NCHW',
        blending=dict(type='MixupBlending', num_classes=num_classes, alpha=0.2)))
