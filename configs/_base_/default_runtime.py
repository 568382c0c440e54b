# Runtime settings shared by the experiments of the graddrop_mtl scope (sine, CelebA, CIFAR-100 transfer).
# The PointPillars configs use mmdet3d's own default_runtime instead.
default_scope = 'graddrop_mtl'
custom_imports = dict(imports=['graddrop_mtl'], allow_failed_imports=False)

val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    # validation metrics logged at the training iteration (not epoch 0): curves over iterations in every backend
    logger=dict(type='LoggerHook', interval=100, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False),
    sampler_seed=dict(type='DistSamplerSeedHook'))
log_processor = dict(by_epoch=False)
# Curves: WORK_DIR/<timestamp>/vis_data/scalars.json and a TensorBoard event file (tensorboard --logdir WORK_DIR),
# with the losses, the learning rate, the validation metrics and the multitask statistics (mtl/...).
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends, name='visualizer')
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_level = 'INFO'
load_from = None
resume = False
