# Quick PointPillars setup for method comparisons on the CPU (tools/analysis/compare_methods.py pointpillars): the
# demo's model and optimiser (../pointpillars_mtl_graddrop_reduced-car_demo.py: 38.4 m square, 0.4 m pillars, batch 1,
# Adam lr 0.003) with the plain sum; the method configs beside it change only optim_wrapper.method.
# 800 iterations instead of the demo's 1600, so that the 24 runs of a comparison (8 methods x 3 seeds) fit in a few
# CPU hours: the boxes are learned by then, the direction classifier (APH) only in part.
# Data: the demo's synthetic Waymo set (front-back asymmetric vehicles), written by compare_methods.py on first use
# with the demo's commands (tools/demo.py, step 1) into data/waymo_quick.
# What differs from the demo config: grad_mode fixed to 'linear' (a run is a function of randomness.seed alone, no
# choice by timing), validation every 200 iterations (the comparison's curves), the seed in randomness.
_base_ = ['../pointpillars_mtl_graddrop_reduced-car_demo.py']

data_root = 'data/waymo_quick/kitti_format/'
max_iters = 800

train_dataloader = dict(dataset=dict(dataset=dict(data_root=data_root)))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'waymo_infos_val.pkl')
test_evaluator = val_evaluator

optim_wrapper = dict(method=dict(_delete_=True, type='Sum'), grad_mode='linear')
train_cfg = dict(max_iters=max_iters, val_interval=200)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters - 20, eta_min=1e-5, by_epoch=False, begin=20, end=max_iters),
]
default_hooks = dict(checkpoint=dict(interval=200, max_keep_ckpts=1))
randomness = dict(seed=0)
