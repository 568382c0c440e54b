# CAGrad (Liu et al. 2021), c = 0.5, rescale = 1 (the authors' defaults)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='CAGrad', c=0.5))
