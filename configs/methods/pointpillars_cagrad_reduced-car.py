# CAGrad (Liu et al. 2021), c = 0.5, rescale = 1 (the authors' defaults)
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='CAGrad', c=0.5))
