# UW (Kendall et al. 2018): one learnt log-variance per task (9, trained with the model by the optim wrapper,
# initialised to LibMTL's -0.5)
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='UW', num_tasks=9, init=-0.5))
