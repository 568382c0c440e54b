# Random GradDrop (rebuttal RGD): the same batch-separated one-sign-per-element masking and the same leaks
# [1.0, 0.0] as the default GradDrop config, but the surviving sign is chosen by a fair coin.
_base_ = './cifar100_transfer_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='RandomGradDrop', leak=[1.0, 0.0], batch_separated=True))
