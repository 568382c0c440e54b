# PointPillars on the Waymo Open Dataset (vehicles), nine task losses, the plain sum of the task gradients (baseline).
# Paper appendix A.6: Adam (0.9, 0.999), lr 0.0015, 1000-step warm-up, cosine annealing, batch 2 x 8 GPUs, gradient
# clipping. The sibling configs differ from this one only in optim_wrapper.method.
#   bash tools/dist_train.sh configs/pointpillars_waymo/pointpillars_mtl_graddrop_waymoD5-car.py 8
# Model and data come from mmdet3d's own Waymo PointPillars bases; the pipelines are the 3-class config's (mmdet3d
# 1.4's waymoD5-3d-car.py packs no boxes for training and drops context_name/timestamp at test time).
_base_ = [
    'mmdet3d::_base_/models/pointpillars_hv_secfpn_waymo.py',
    'mmdet3d::_base_/datasets/waymoD5-3d-3class.py',
    'mmdet3d::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['graddrop_mtl', 'graddrop_mtl.det3d.models', 'graddrop_mtl.det3d.evaluation',
             'graddrop_mtl.det3d.visualization'],
    allow_failed_imports=False)

class_names = ['Car']
metainfo = dict(classes=class_names)
data_root = 'data/waymo/kitti_format/'

model = dict(
    pts_bbox_head=dict(
        type='MultiTaskAnchor3DHead',
        num_classes=1,
        anchor_generator=dict(
            type='AlignedAnchor3DRangeGenerator',
            ranges=[[-74.88, -74.88, -0.0345, 74.88, 74.88, -0.0345]],
            sizes=[[4.73, 2.08, 1.77]],
            rotations=[0, 1.57],
            reshape_out=True)),
    train_cfg=dict(
        _delete_=True,
        pts=dict(
            assigner=dict(
                type='Max3DIoUAssigner',
                iou_calculator=dict(type='BboxOverlapsNearest3D'),
                pos_iou_thr=0.55,
                neg_iou_thr=0.4,
                min_pos_iou=0.4,
                ignore_iof_thr=-1),
            allowed_border=0,
            code_weight=[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
            pos_weight=-1,
            debug=False)))

train_dataloader = dict(
    batch_size=2,
    dataset=dict(dataset=dict(data_root=data_root, metainfo=metainfo)))
# mmdet3d's evaluation pipeline, keeping lidar_path and num_pts_feats for the BEV pictures (--show-dir)
eval_pipeline = [
    dict(type='LoadPointsFromFile', coord_type='LIDAR', load_dim=6, use_dim=5),
    dict(type='Pack3DDetInputs', keys=['points'],
         meta_keys=['box_type_3d', 'sample_idx', 'context_name', 'timestamp', 'lidar_path', 'num_pts_feats']),
]
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=eval_pipeline))
test_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=eval_pipeline))
val_evaluator = dict(
    _delete_=True, type='WaymoAPMetric', ann_file=data_root + 'waymo_infos_val.pkl', classes=class_names,
    backend='auto')
test_evaluator = val_evaluator

# The shared activation is the neck output (SECONDFPN's 384-channel BEV feature map, input of the head's 1x1 convs).
# Gradient clipping as in the paper's main results (its value is not given; mmdet3d's PointPillars uses 35).
optim_wrapper = dict(
    type='MultiTaskOptimWrapper',
    optimizer=dict(type='Adam', lr=0.0015, betas=(0.9, 0.999)),
    clip_grad=dict(max_norm=35, norm_type=2),
    method=dict(type='Sum'),
    shared='pts_neck',
    # the head's 1x1 convolutions read the neck output: per-task gradients are taken at their outputs and mapped
    # back through their weights, sparse (see MultiTaskOptimWrapper); 'auto' checks on the first step that nothing
    # else reads the neck output and compares with autograd at a few rows (graddrop_mtl/engine/task_grads.py).
    # Without linear_heads 'auto' finds these layers itself; a dense stack of the nine per-task gradients would
    # hold 9 x [2, 384, 468, 468] float32 values, which is what the sparse path avoids.
    linear_heads=['pts_bbox_head.conv_cls', 'pts_bbox_head.conv_reg', 'pts_bbox_head.conv_dir_cls'],
    grad_mode='auto',
    stats_interval=10)

# 24 epochs of the D5 split (mmdet3d's 2x); the paper trained 1.28M steps on the full training set.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=24, val_interval=24)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=1.0 / 1000, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', T_max=24, eta_min=0, by_epoch=True, begin=0, end=24,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=16)
# tools/test.py CONFIG CKPT --show-dir DIR: one bird's-eye-view PNG per test frame (matplotlib, no display).
# Curves: WORK_DIR/<timestamp>/vis_data (scalars.json, TensorBoard event file), multitask statistics included.
default_hooks = dict(
    checkpoint=dict(type='CheckpointHook', interval=1),
    visualization=dict(type='BEVVisualizationHook', vis_task='lidar_det'))
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Det3DLocalVisualizer', vis_backends=vis_backends, name='visualizer')
