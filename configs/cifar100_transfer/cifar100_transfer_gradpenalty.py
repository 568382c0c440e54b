# Gradient penalty (rebuttal GP): loss + 0.01 * ||sum_i dL_i/dA||^2 at the shared activation (double backward; the
# paper does not give the weight, 0.01 is our choice).
_base_ = './cifar100_transfer_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradPenalty', weight=0.01))
