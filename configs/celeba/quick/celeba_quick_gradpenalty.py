# Quick CelebA run, gradient penalty: the method of ../celeba_gradpenalty.py on the quick setup (celeba_quick_base.py).
_base_ = './celeba_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradPenalty', weight=0.1))
