# GLS (Chennupati et al. 2019): the geometric mean of the task losses
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GLS'))
