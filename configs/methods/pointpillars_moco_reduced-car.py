# MoCo (Fernando et al. 2023), LibMTL's step sizes and decay rates
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='MoCo', beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5,
                                 rho=0.0))
