# Quick transfer run, GradDrop (k 0.25, leak [1, 0], batch-separated): the method of ../cifar100_transfer_graddrop.py
# on the quick setup
# (transfer_quick_base.py).
_base_ = './transfer_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradDrop', k=0.25, leak=[1.0, 0.0], batch_separated=True))
