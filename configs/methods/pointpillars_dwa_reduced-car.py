# DWA (Liu et al. 2019), temperature 2; window=1 step (the paper averages over an epoch: set window to the
# iterations per epoch)
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='DWA', temp=2.0, window=1))
