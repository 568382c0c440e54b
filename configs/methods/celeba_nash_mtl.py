# Nash-MTL (Navon et al. 2022), the authors' max_norm = 1.0
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='NashMTL', max_norm=1.0))
