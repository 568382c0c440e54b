# MoCo (Fernando et al. 2023), LibMTL's step sizes and decay rates
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
# state_dims=1: the state is kept per channel of the shared conv map (the backbone's output, [B, C, H, W]), i.e. on
# the gradient of a per-channel bias, whose size does not depend on the input resolution.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='MoCo', beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5,
                                 rho=0.0, state_dims=1))
