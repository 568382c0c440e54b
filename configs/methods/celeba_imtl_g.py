# IMTL-G (Liu et al. 2021): equal projections onto the unit task gradients
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='IMTLG'))
