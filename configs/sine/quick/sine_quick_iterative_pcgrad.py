# Quick sine run: the method of ../sine_iterative_pcgrad.py on the quick setup (sine_quick_base.py).
_base_ = ['./sine_quick_base.py']
optim_wrapper = dict(method=dict(type='PCGrad', iterative=True))
