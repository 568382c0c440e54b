# Krum (Blanchard et al. 2017; TorchJD): the task gradient closest to the others
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Krum', n_byzantine=0, n_selected=1))
