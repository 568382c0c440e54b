# Gradient clipping (rebuttal GC): the plain sum, with the global L2 norm of the parameter gradients clipped to 5
# (the paper does not give the threshold; 5 is our choice).
_base_ = './cifar100_transfer_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Sum'), clip_grad=dict(max_norm=5.0, norm_type=2))
