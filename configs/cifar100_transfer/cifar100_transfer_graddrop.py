# GradDrop, batch-separated (the two tasks see different rows of the batch), at the output of the last dense block,
# with f(P) = 0.25 (P - 0.5) + 0.5 (k = 0.25) and leaks [l_imagenet, l_cifar] = [1.0, 0.0] (l_source = 1,
# l_transfer = 0: the ImageNet gradient passes untouched, the CIFAR-100 gradient is sign-dropped): the paper's best
# setting (appendix A.5, Table 5 last row).
_base_ = './cifar100_transfer_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradDrop', k=0.25, leak=[1.0, 0.0], batch_separated=True))
