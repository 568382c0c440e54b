# IMTL-L (Liu et al. 2021): one learnt loss scale per task (9, trained with the model by the optim wrapper,
# initialised to 0)
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='IMTLL', num_tasks=9))
