# Aligned-MTL (Senushkin et al. 2023), the paper's smallest-eigenvalue scale
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='AlignedMTL', scale_mode='min'))
