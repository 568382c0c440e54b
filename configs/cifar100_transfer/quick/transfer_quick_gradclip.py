# Quick transfer run, gradient clipping: the method of ../cifar100_transfer_gradclip.py on the quick setup
# (transfer_quick_base.py).
_base_ = './transfer_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Sum'), clip_grad=dict(max_norm=5.0, norm_type=2))
