# RLW (Lin et al. 2022): softmax of a standard normal draw per step
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='RLW'))
