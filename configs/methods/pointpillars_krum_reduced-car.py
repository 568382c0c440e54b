# Krum (Blanchard et al. 2017; TorchJD): the task gradient closest to the others
# The reduced-range PointPillars baseline (configs/pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py)
# with only the method changed.
_base_ = '../pointpillars_waymo/pointpillars_mtl_sum_reduced-car.py'
optim_wrapper = dict(method=dict(_delete_=True, type='Krum', n_byzantine=0, n_selected=1))
