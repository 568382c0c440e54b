# STCH (Lin et al. 2024), mu = 1, 4 warm-up epochs (LibMTL's defaults); an epoch is 20347 steps: the 162,770
# training images at batch 8 on one process (more processes: --cfg-options
# optim_wrapper.method.iters_per_epoch=N with N the images over the global batch)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='STCH', mu=1.0, warmup_epoch=4, iters_per_epoch=20347))
