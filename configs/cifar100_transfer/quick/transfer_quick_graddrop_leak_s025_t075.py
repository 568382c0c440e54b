# Quick transfer run, GradDrop with leak [0.25, 0.75] (Table 5 sweep): the method of
# ../cifar100_transfer_graddrop_leak_s025_t075.py on the quick setup
# (transfer_quick_base.py).
_base_ = './transfer_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradDrop', k=0.25, leak=[0.25, 0.75], batch_separated=True))
