# Quick sine setup for method comparisons (tools/analysis/compare_methods.py sine): the paper's problem and schedule
# (../sine_base.py: 200 replicas, 10k steps), seeded by
# randomness.seed: the methods' random streams follow it (optim_wrapper.seed=None draws the wrapper's seed from the
# seeded global RNG). The replicas' initial weights are the problem instance, set by model.init_seed
# (compare_methods.py passes --cfg-options model.init_seed=S with randomness.seed=S, so that a seed also draws new
# starting points). No data, no checkpoint needed (the SineTrajectoryHook writes sine_trajectory.npz).
_base_ = ['../sine_base.py']

optim_wrapper = dict(seed=None)
default_hooks = dict(logger=dict(interval=500))
randomness = dict(seed=0)
