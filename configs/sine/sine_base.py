# The one-dimensional sine experiment (paper Section 4.1, appendix A.3): 200 replicas of one weight, five losses
# sin(a_i w + b_i) + 1, plain SGD, lr 0.2 halved every 1k steps, 10k steps. Method configs override only
# optim_wrapper.method. Run: python tools/train.py configs/sine/sine_graddrop.py
default_scope = 'graddrop_mtl'
custom_imports = dict(imports=['graddrop_mtl'], allow_failed_imports=False)

model = dict(type='SineMTLModel', num_replicas=200, init_seed=0, overlap=0.0)

train_dataloader = dict(
    batch_size=1, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=False),
    dataset=dict(type='NoDataDataset'), collate_fn=dict(type='pseudo_collate'))
val_dataloader = dict(
    batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='NoDataDataset'), collate_fn=dict(type='pseudo_collate'))
test_dataloader = val_dataloader
val_evaluator = dict(type='SineMetric', overlap=0.0)
test_evaluator = val_evaluator

train_cfg = dict(type='IterBasedTrainLoop', max_iters=10000, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# Every replica is its own problem (problem_dims=1) with its own random stream (problem_rng), so the methods that
# take dot products, solve for weights or draw random numbers treat replicas independently.
optim_wrapper = dict(
    type='MultiTaskOptimWrapper',
    optimizer=dict(type='SGD', lr=0.2),
    method=dict(type='Sum'),
    shared='trunk',
    problem_dims=1,
    problem_rng=True,
    seed=0,
    grad_mode='loop',
    log_per_task=False)
param_scheduler = [dict(type='StepLR', step_size=1000, gamma=0.5, by_epoch=False)]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1000),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10000, by_epoch=False),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='SineTrajectoryHook')]
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
log_level = 'INFO'
load_from = None
resume = False
