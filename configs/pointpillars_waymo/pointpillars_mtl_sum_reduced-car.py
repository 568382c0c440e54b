# The reduced-range variant for CPU runs, tests and the demo: a 51.2 m square around the vehicle (160 x 160 pillar
# grid instead of 468 x 468), fewer voxels, no data-loading workers, every frame (no D5 interval). Everything else,
# the nine task losses and the optim wrapper included, is the full config's.
_base_ = ['./pointpillars_mtl_sum_waymoD5-car.py']

point_cloud_range = [-25.6, -25.6, -2, 25.6, 25.6, 4]
voxel_size = [0.32, 0.32, 6]
data_root = 'data/waymo/kitti_format/'

model = dict(
    data_preprocessor=dict(
        voxel_layer=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size, max_voxels=(12000, 12000))),
    pts_voxel_encoder=dict(point_cloud_range=point_cloud_range, voxel_size=voxel_size),
    pts_middle_encoder=dict(output_shape=[160, 160]),
    pts_bbox_head=dict(
        anchor_generator=dict(ranges=[[-25.6, -25.6, -0.0345, 25.6, 25.6, -0.0345]])),
    test_cfg=dict(pts=dict(nms_pre=1024, max_num=100)))

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
train_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(times=1, dataset=dict(data_root=data_root, pipeline=train_pipeline, load_interval=1)))
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=eval_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'waymo_infos_val.pkl')
test_evaluator = val_evaluator
