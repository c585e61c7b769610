# mmdet-style runtime shared by ovkit's detection configs.
default_scope = 'mmdet'
# ovkit.engine: ExactResumeHook and AtomicCheckpointHook (issue 8).
custom_imports = dict(imports=['ovkit', 'ovkit.engine'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # RNG state, data position and non-persistent buffers per rank in every checkpoint, so a
    # resumed run continues bit-identically (ovkit.engine.resume).
    exact_resume=dict(type='ExactResumeHook'),
    visualization=dict(type='DetVisualizationHook'))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # ovkit.compat switches nccl to gloo when no GPU is present.
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)

log_level = 'INFO'
load_from = None
resume = False
