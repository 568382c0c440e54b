# Quick transfer run, gradient penalty: the method of ../cifar100_transfer_gradpenalty.py on the quick setup
# (transfer_quick_base.py).
_base_ = './transfer_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradPenalty', weight=0.01))
