# FAMO (Liu et al. 2023), the authors' w_lr and gamma
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='FAMO', w_lr=0.025, gamma=0.001))
