# SDMGrad (Xiao et al. 2023), TorchJD's inner SGD and the authors' lambda = 0.3
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='SDMGrad', lr=10.0, momentum=0.5, n_iter=20, lambda_=0.3))
