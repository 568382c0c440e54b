# GradNorm (Chen et al. 2018), alpha = 1.5, on the gradients at the final conv layer's output (paper Table 2).
_base_ = './celeba_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradNorm', alpha=1.5, lr=0.025))
