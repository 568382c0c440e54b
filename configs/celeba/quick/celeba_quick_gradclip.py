# Quick CelebA run, gradient clipping: the method of ../celeba_gradclip.py on the quick setup (celeba_quick_base.py).
_base_ = './celeba_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Sum'), clip_grad=dict(max_norm=10.0, norm_type=2))
