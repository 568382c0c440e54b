# ExcessMTL (He et al. 2024), TorchJD's robust_step_size, the first step setting the baseline (the authors' code)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
# state_dims=1: the state is kept per channel of the shared conv map (the backbone's output, [B, C, H, W]), i.e. on
# the gradient of a per-channel bias, whose size does not depend on the input resolution.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='ExcessMTL', robust_step_size=1.0, n_warmup_steps=1,
                                 state_dims=1))
