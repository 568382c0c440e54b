# ExcessMTL (He et al. 2024), TorchJD's robust_step_size, the first step setting the baseline (the authors' code)
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
# state_dims=1: the state is kept per channel of the shared BEV map (pts_neck, [B, C, H, W]), i.e. on the gradient
# of a per-channel bias, so its size and the one reduce per step depend neither on the batch nor on the BEV extent;
# a per-pixel state on the full-range map would be too large to keep and to reduce under DDP.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='ExcessMTL', robust_step_size=1.0, n_warmup_steps=1,
                                 state_dims=1))
