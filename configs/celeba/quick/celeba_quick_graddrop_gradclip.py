# Quick CelebA run, GradDrop + gradient clipping: the method of ../celeba_graddrop_gradclip.py on the quick setup
# (celeba_quick_base.py).
_base_ = './celeba_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradDrop', k=1.0, leak=0.0),
                     clip_grad=dict(max_norm=10.0, norm_type=2))
