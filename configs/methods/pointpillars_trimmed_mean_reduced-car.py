# Coordinate-wise trimmed mean (Yin et al. 2018; TorchJD), one value dropped at each end
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='TrimmedMean', trim_number=1))
