# DualProj (Quinton & Rey 2024): the mean gradient projected onto the dual cone of the task gradients
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='DualProj'))
