# UW (Kendall et al. 2018): one learnt log-variance per task (40, trained with the model by the optim wrapper,
# initialised to LibMTL's -0.5)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='UW', num_tasks=40, init=-0.5))
