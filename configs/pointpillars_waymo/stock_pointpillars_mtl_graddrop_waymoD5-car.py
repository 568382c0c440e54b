# The stock-config plugin example with the paper's nine task losses: mmdet3d's car config as in
# stock_pointpillars_graddrop_waymoD5-car.py, with MultiTaskAnchor3DHead (the stock Anchor3DHead whose loss_bbox is
# split by box dimension: loss_cls, loss_x, ..., loss_yaw, loss_dir; same layers, so checkpoints load either way).
_base_ = ['./stock_pointpillars_graddrop_waymoD5-car.py']

model = dict(pts_bbox_head=dict(type='MultiTaskAnchor3DHead'))
