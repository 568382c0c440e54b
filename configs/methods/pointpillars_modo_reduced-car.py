# MoDo (Chen et al. 2023), TorchJD's gamma and rho
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='MoDo', gamma=0.1, rho=0.1))
