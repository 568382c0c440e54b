# The README's demo (python tools/demo.py): the reduced PointPillars with GradDrop, made smaller still so that the
# whole demo runs on a CPU in minutes: a 38.4 m square around the vehicle with 0.4 m pillars (96 x 96 grid)
# and the synthetic Waymo set that tools/demo.py writes (scenes inside that square). The model, the nine task losses,
# the anchors, the assigner, the augmentation and the optim wrapper (GradDrop at the neck output) are the reduced
# config's. What differs besides the range, for a run of 1600 iterations instead of 24 epochs:
# - 1600 iterations: the boxes are found within 800, but the direction classifier (the ninth task, which APH
#   scores) starts to learn only after the box features have formed, late in an 800-iteration run;
# - batch 1 instead of 2: on a CPU a batch-1 step costs less than a batch-2 step, so the same time buys more
#   updates, which a short run needs more than larger batches;
# - Adam at a higher lr than the full config's (which is for 24 epochs), 20-iteration warm-up, cosine to 1e-5;
# - BatchNorm momentum 0.1 instead of mmdet3d's 0.01: with 0.01 the running statistics used at test time still carry
#   a large share of their initial values after a few hundred steps and lag the weights.
# The measurements behind these choices: docs/benchmarks.md ("Why the demo config differs from the reduced one").
_base_ = ['./pointpillars_mtl_graddrop_reduced-car.py']

data_root = 'work_dirs/demo/data/waymo/kitti_format/'
point_cloud_range = [-19.2, -19.2, -2, 19.2, 19.2, 4]
voxel_size = [0.4, 0.4, 6]
max_iters = 1600

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size, max_voxels=(8000, 8000))),
    pts_voxel_encoder=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size, norm_cfg=dict(momentum=0.1)),
    pts_middle_encoder=dict(output_shape=[96, 96]),
    pts_backbone=dict(norm_cfg=dict(momentum=0.1)),
    pts_neck=dict(norm_cfg=dict(momentum=0.1)),
    pts_bbox_head=dict(anchor_generator=dict(ranges=[[-19.2, -19.2, -0.0345, 19.2, 19.2, -0.0345]])))

train_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=6, use_dim=5),
    dict(type='LoadAnnotations3D', with_bbox_3d=True, with_label_3d=True),
    dict(type='RandomFlip3D', sync_2d=False, flip_ratio_bev_horizontal=0.5, flip_ratio_bev_vertical=0.5),
    dict(type='GlobalRotScaleTrans', rot_range=[-0.78539816, 0.78539816], scale_ratio_range=[0.95, 1.05]),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='ObjectRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='PointShuffle'),
    dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d', 'gt_labels_3d']),
]
eval_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=6, use_dim=5),
    dict(type='PointsRangeFilter', point_cloud_range=point_cloud_range),
    dict(type='Pack3DDetInputs', keys=['points'],
         meta_keys=['box_type_3d', 'sample_idx', 'context_name', 'timestamp', 'lidar_path', 'num_pts_feats']),
]
train_dataloader = dict(batch_size=1, dataset=dict(dataset=dict(data_root=data_root, pipeline=train_pipeline)))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=eval_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'waymo_infos_val.pkl', backend='native')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=0.003))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', T_max=max_iters - 20, eta_min=1e-5, by_epoch=False, begin=20, end=max_iters),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', interval=max_iters, by_epoch=False))
log_processor = dict(by_epoch=False)
