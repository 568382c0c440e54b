# ExcessMTL (He et al. 2024), TorchJD's robust_step_size, the first step setting the baseline (the authors' code)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='ExcessMTL', robust_step_size=1.0, n_warmup_steps=1))
