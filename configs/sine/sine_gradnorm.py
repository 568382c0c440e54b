_base_ = ['./sine_base.py']

optim_wrapper = dict(method=dict(type='GradNorm', alpha=1.5, lr=0.025))
