# Quick transfer run, Random GradDrop: the method of ../cifar100_transfer_random_graddrop.py on the quick setup
# (transfer_quick_base.py).
_base_ = './transfer_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='RandomGradDrop', leak=[1.0, 0.0], batch_separated=True))
