# Quick PointPillars run: the method of ../pointpillars_mtl_gradnorm_graddrop_reduced-car.py on the quick setup
# (pointpillars_quick_base.py).
_base_ = './pointpillars_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Compose', weighting=dict(type='GradNorm', alpha=1.5, lr=0.025),
                                 then=dict(type='GradDrop')))
