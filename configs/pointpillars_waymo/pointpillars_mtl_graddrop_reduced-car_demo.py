# The README's demo: the reduced PointPillars with GradDrop, a short iteration-based schedule on the synthetic Waymo
# set that tools/demo.py generates and converts (data_root below). Run through `python tools/demo.py`.
_base_ = ['./pointpillars_mtl_graddrop_reduced-car.py']

data_root = 'work_dirs/demo/data/waymo/kitti_format/'
max_iters = 300

train_dataloader = dict(dataset=dict(dataset=dict(data_root=data_root)))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'waymo_infos_val.pkl', backend='native')
test_evaluator = val_evaluator

train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', T_max=max_iters - 30, eta_min=1e-5, by_epoch=False, begin=30, end=max_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=max_iters, by_epoch=False))
log_processor = dict(by_epoch=False)
