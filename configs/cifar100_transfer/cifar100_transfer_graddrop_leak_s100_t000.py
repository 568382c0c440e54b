# Table 5 leak sweep: l_source (ImageNet) = 1.0, l_transfer (CIFAR-100) = 0.0; otherwise the default GradDrop config.
_base_ = './cifar100_transfer_graddrop.py'
optim_wrapper = dict(method=dict(leak=[1.0, 0.0]))
