# PP-TSM R50 on Kinetics-400, dense sampling (PaddleVideo pptsm_k400_frames_dense.yaml; 75.69
# top-1, 76.16 with distillation): 8 frames with stride 8 from a random 64-frame window;
# warmup 10 from 0.01 to the cosine at 0.02. Validation as Paddle's: uniform, centre crop.
# Test: 10 windows x 3 crops (left, right, centre at mid height), logits averaged
# (average_clips='score', which equals Paddle's mean of features before the linear fc).
_base_ = './pptsm_imagenet-pretrained-r50vd_8xb16-1x1x8-80e_kinetics400-rgb.py'

train_pipeline = [
    dict(type='PyAVOpen'),
    dict(type='DenseSampleFrames', clip_len=1, frame_interval=1, num_clips=8),
    dict(type='PyAVDecodeSampled'),
    dict(type='PaddleScale', short_size=256),
    dict(type='PaddleMultiScaleCrop', target_size=256, scales=(1, .875, .75, .66)),
    dict(type='PaddleRandomCrop', target_size=224),
    dict(type='Flip', flip_ratio=0.5),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
test_pipeline = [
    dict(type='PyAVOpen'),
    dict(type='DenseSampleFrames', clip_len=1, frame_interval=1, num_clips=8,
         num_sample_positions=10, test_mode=True),
    dict(type='PyAVDecodeSampled'),
    dict(type='PaddleScale', short_size=256),
    dict(type='PaddleThreeCrop', crop_size=224),
    dict(type='FormatShape', input_format='NCHW'),
    dict(type='PackActionInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

base_lr = 0.02
optim_wrapper = dict(optimizer=dict(lr=base_lr))
param_scheduler = [
    dict(type='PaddleWarmupCosineLR', warmup_start_lr=0.01, warmup_epochs=10,
         max_epochs=80, by_epoch=True, convert_to_iter_based=True)
]
