# The one-dimensional sine experiment (paper Section 4.1, appendix A.3): 200 replicas of one weight, five losses
# sin(a_i w + b_i) + 1, plain SGD, lr 0.2 halved every 1k steps, 10k steps. Method configs override only
# optim_wrapper.method. Run: python tools/train.py configs/sine/sine_graddrop.py
_base_ = ['../_base_/default_runtime.py']

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
    logger=dict(interval=1000),
    checkpoint=dict(interval=10000))
custom_hooks = [dict(type='SineTrajectoryHook')]
