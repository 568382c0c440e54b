# Quick transfer run, GradDrop with leak [0.75, 0.25] (Table 5 sweep): the method of
# ../cifar100_transfer_graddrop_leak_s075_t025.py on the quick setup
# (transfer_quick_base.py).
_base_ = './transfer_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradDrop', k=0.25, leak=[0.75, 0.25], batch_separated=True))
