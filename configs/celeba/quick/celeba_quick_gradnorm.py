# Quick CelebA run, GradNorm: the method of ../celeba_gradnorm.py on the quick setup (celeba_quick_base.py).
_base_ = './celeba_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradNorm', alpha=1.5, lr=0.025))
