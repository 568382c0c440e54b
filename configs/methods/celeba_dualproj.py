# DualProj (Quinton & Rey 2024): the mean gradient projected onto the dual cone of the task gradients
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='DualProj'))
