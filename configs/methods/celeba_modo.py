# MoDo (Chen et al. 2023), TorchJD's gamma and rho
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='MoDo', gamma=0.1, rho=0.1))
