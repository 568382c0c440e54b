# GradDrop (paper default: f(P) = P, i.e. k = 1, no leak) after the final conv layer (rebuttal Table I "Ours").
_base_ = './celeba_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradDrop', k=1.0, leak=0.0))
