# The transfer baseline: the trunk receives the plain sum of the two tasks' gradients (what loss.backward() on
# loss_imagenet + loss_cifar sends). Table 5 / rebuttal Table I "Baseline".
_base_ = './cifar100_transfer_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Sum'))
