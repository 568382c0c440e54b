_base_ = ['./sine_base.py']

optim_wrapper = dict(method=dict(type='RandomGradDrop'))
