# Quick transfer run, MGDA-UB: the method of ../cifar100_transfer_mgda.py on the quick setup
# (transfer_quick_base.py).
_base_ = './transfer_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='MGDA', normalization='loss+'))
