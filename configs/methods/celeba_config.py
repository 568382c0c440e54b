# ConFIG (Liu, Chu & Thuerey 2025): equal cosine to every task gradient
# The CelebA baseline (configs/celeba/celeba_sum.py) with only the method changed.
_base_ = '../celeba/celeba_sum.py'
optim_wrapper = dict(method=dict(_delete_=True, type='ConFIG'))
