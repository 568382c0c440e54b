# Table 5 leak sweep: l_source (ImageNet) = 0.5, l_transfer (CIFAR-100) = 0.5; otherwise the default GradDrop config.
_base_ = './cifar100_transfer_graddrop.py'
optim_wrapper = dict(method=dict(leak=[0.5, 0.5]))
