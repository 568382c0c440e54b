# IMTL-L (Liu et al. 2021): one learnt loss scale per task (40, trained with the model by the optim wrapper,
# initialised to 0)
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='IMTLL', num_tasks=40))
