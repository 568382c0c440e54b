# DB-MTL (Lin et al. 2023), beta = 0.9, beta_sigma = 0 (LibMTL's defaults)
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='DBMTL', beta=0.9, beta_sigma=0.0))
