# FAMO (Liu et al. 2023), the authors' w_lr and gamma
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='FAMO', w_lr=0.025, gamma=0.001))
