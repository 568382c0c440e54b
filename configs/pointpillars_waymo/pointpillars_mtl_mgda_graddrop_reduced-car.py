_base_ = ['./pointpillars_mtl_sum_reduced-car.py']

optim_wrapper = dict(method=dict(type='Compose', weighting=dict(type='MGDA', normalization='loss+'),
                                 then=dict(type='GradDrop')))
