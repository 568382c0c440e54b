# Quick transfer run, GradNorm: the method of ../cifar100_transfer_gradnorm.py on the quick setup
# (transfer_quick_base.py).
_base_ = './transfer_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradNorm', alpha=1.5, lr=0.025))
