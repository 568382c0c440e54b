# GradNorm (alpha 1.5): learnt task weights balancing the norms of the tasks' gradients at the shared activation.
_base_ = './cifar100_transfer_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradNorm', alpha=1.5, lr=0.025))
