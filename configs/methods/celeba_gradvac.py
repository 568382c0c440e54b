# GradVac (Wang et al. 2021), EMA rate 0.5 (LibMTL and TorchJD)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradVac', beta=0.5))
