# Quick PointPillars run: the method of ../pointpillars_mtl_pcgrad_reduced-car.py on the quick setup
# (pointpillars_quick_base.py).
_base_ = './pointpillars_quick_base.py'
optim_wrapper = dict(method=dict(_delete_=True, type='PCGrad'))
