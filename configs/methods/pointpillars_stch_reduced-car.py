# STCH (Lin et al. 2024), mu = 1, 4 warm-up epochs (LibMTL's defaults); an epoch is 79041 steps: Waymo's 158,081
# training frames (every frame, as this config loads them) at batch 2 on one process (other data or more
# processes: --cfg-options optim_wrapper.method.iters_per_epoch=N with N the frames over the global batch)
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='STCH', mu=1.0, warmup_epoch=4, iters_per_epoch=79041))
