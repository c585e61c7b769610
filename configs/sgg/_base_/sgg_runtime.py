# mmdet's runtime (via ovkit's base) for the scene-graph configs: the sgg family imported, the
# frequency statistics hook, iteration-based logging and checkpoints (best val R@100 kept).
_base_ = '../../_base_/mmdet_runtime.py'
custom_imports = dict(imports=['ovkit.sgg'], allow_failed_imports=False)
custom_hooks = [dict(type='SGGStatisticsHook')]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    # the runtime base's AtomicCheckpointHook (ovkit.engine), with SGB's cadence
    checkpoint=dict(by_epoch=False, interval=2000, max_keep_ckpts=3,
                    save_best='sgg/R@100', rule='greater'))
log_processor = dict(type='LogProcessor', window_size=100, by_epoch=False)
