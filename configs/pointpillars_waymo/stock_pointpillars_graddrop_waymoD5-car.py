# GradDrop as a plugin on mmdet3d 1.4's own Waymo PointPillars car config, inherited unmodified from the installed
# package: the stock model (3-loss Anchor3DHead: loss_cls, loss_bbox, loss_dir), data, schedule and evaluator; only
# the optim wrapper changes, to MultiTaskOptimWrapper (the config's AdamW, lr and clip_grad are kept). See README.md
# ("GradDrop on mmdet3d's stock config").
#   python tools/train.py configs/pointpillars_waymo/stock_pointpillars_graddrop_waymoD5-car.py
_base_ = ['mmdet3d::pointpillars/pointpillars_hv_secfpn_sbn-all_16xb2-2x_waymoD5-3d-car.py']
custom_imports = dict(imports=['graddrop_mtl'], allow_failed_imports=False)

# mmdet3d 1.4's car config packs no boxes for training: its train pipeline ends in Pack3DDetInputs(keys=['points']),
# so the head gets no ground truth. The one-line fix (the same transform with the boxes and labels):
train_dataloader = dict(dataset=dict(dataset=dict(pipeline=[*_base_.train_pipeline[:-1], dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])])))  # noqa: E501

# GradDrop on the per-task gradients at the neck output (SECONDFPN's BEV map, which the head's 1x1 convs read).
optim_wrapper = dict(type='MultiTaskOptimWrapper', method=dict(type='GradDrop'), shared='pts_neck')
