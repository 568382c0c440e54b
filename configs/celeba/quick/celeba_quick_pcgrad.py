# Quick CelebA run, PCGrad: the method of ../celeba_pcgrad.py on the quick setup (celeba_quick_base.py).
_base_ = './celeba_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='PCGrad'))
