# Quick PointPillars run: the method of ../pointpillars_mtl_mgda_graddrop_reduced-car.py on the quick setup
# (pointpillars_quick_base.py).
_base_ = './pointpillars_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Compose', weighting=dict(type='MGDA', normalization='loss+'),
                                 then=dict(type='GradDrop')))
