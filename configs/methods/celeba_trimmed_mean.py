# Coordinate-wise trimmed mean (Yin et al. 2018; TorchJD), one value dropped at each end
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='TrimmedMean', trim_number=1))
