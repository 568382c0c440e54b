# PCGrad (Yu et al. 2020) on the per-task gradients at the final conv layer's output (paper Table 2).
_base_ = './celeba_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='PCGrad'))
