# FairGrad (Ban & Ji 2024), alpha = 1 (proportional fairness)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='FairGrad', alpha=1.0))
