# Random (TorchJD; Lin et al. 2022): softmax of a normal draw as the gradient weights, heads unweighted
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Random'))
