# GradDrop + gradient clipping (rebuttal lines 19-21: GC and GradDrop combine): celeba_graddrop.py with the clipping
# of celeba_gradclip.py.
_base_ = './celeba_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradDrop', k=1.0, leak=0.0),
                     clip_grad=dict(max_norm=10.0, norm_type=2))
