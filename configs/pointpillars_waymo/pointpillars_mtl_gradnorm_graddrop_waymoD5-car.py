_base_ = ['./pointpillars_mtl_sum_waymoD5-car.py']

optim_wrapper = dict(method=dict(type='Compose', weighting=dict(type='GradNorm', alpha=1.5, lr=0.025),
                                 then=dict(type='GradDrop')))
