# Random GradDrop (rebuttal Table I "RGD"): one sign per element of the shared activation kept by a fair coin.
_base_ = './celeba_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='RandomGradDrop'))
