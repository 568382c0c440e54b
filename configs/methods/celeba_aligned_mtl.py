# Aligned-MTL (Senushkin et al. 2023), the paper's smallest-eigenvalue scale
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='AlignedMTL', scale_mode='min'))
