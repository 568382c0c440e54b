# Baseline: the plain sum of the 40 attribute losses (rebuttal Table I "Baseline").
_base_ = './celeba_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Sum'))
