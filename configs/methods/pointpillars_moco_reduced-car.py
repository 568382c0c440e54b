# MoCo (Fernando et al. 2023), LibMTL's step sizes and decay rates
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
# state_dims=1: the state is kept per channel of the shared BEV map (pts_neck, [B, C, H, W]), i.e. on the gradient
# of a per-channel bias, so its size and the one reduce per step depend neither on the batch nor on the BEV extent;
# a per-pixel state on the full-range map would be too large to keep and to reduce under DDP.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='MoCo', beta=0.5, beta_sigma=0.5, gamma=0.1, gamma_sigma=0.5,
                                 rho=0.0, state_dims=1))
