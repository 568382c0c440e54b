# DWA (Liu et al. 2019), temperature 2; window=1 step (the paper averages over an epoch: set window to the
# iterations per epoch)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='DWA', temp=2.0, window=1))
