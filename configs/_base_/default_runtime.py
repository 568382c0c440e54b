# Runtime settings shared by the experiments of the graddrop_mtl scope (sine, CelebA, CIFAR-100 transfer).
# The PointPillars configs use mmdet3d's own default_runtime instead.
default_scope = 'graddrop_mtl'
custom_imports = dict(imports=['graddrop_mtl'], allow_failed_imports=False)

val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False),
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_level = 'INFO'
load_from = None
resume = False
