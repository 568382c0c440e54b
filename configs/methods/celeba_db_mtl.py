# DB-MTL (Lin et al. 2023), beta = 0.9, beta_sigma = 0 (LibMTL's defaults)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='DBMTL', beta=0.9, beta_sigma=0.0))
