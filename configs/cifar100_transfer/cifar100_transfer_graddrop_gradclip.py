# GC + GradDrop (rebuttal line 21: beats GC alone by 0.3% accuracy on CIFAR-100): the default GradDrop config with
# the clipping of cifar100_transfer_gradclip.py.
_base_ = './cifar100_transfer_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='GradDrop', k=0.25, leak=[1.0, 0.0], batch_separated=True),
                     clip_grad=dict(max_norm=5.0, norm_type=2))
