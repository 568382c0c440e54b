_base_ = ['./pointpillars_mtl_sum_reduced-car.py']

optim_wrapper = dict(method=dict(type='GradDrop', k=1.0, leak=0.0))
