"""Waymo frames to mmdet3d 1.4 info dicts (the ``data_list`` entries of ``waymo_infos_*.pkl``).

The keys and values follow mmdet3d 1.4's ``Waymo2KITTI.create_waymo_info_file`` / ``gather_instance_info``, so the
stock ``WaymoDataset`` loads them; on top of them each instance carries ``difficulty`` and each sample carries
``context_name`` and ``timestamp`` (mmdet3d writes the last two as well), which the Waymo metric reads.

Per sample::

    sample_idx    int(f'{prefix}{segment:03d}{frame:03d}'), prefix 0 training, 1 validation, 2 testing
    timestamp     frame.timestamp_micros
    ego2global    frame.pose as a 4x4 list (float32 values)
    context_name  frame.context.name
    images        per camera (CAM_FRONT, ...) with a calibration: img_path, height, width, lidar2cam, cam2img,
                  lidar2img (the KITTI-style camera frame mmdet3d uses); {} for lidar-only frames
    lidar_points  {'lidar_path': f'{prefix}{segment:03d}{frame:03d}.bin', 'num_pts_feats': 6}
    lidar_sweeps  up to ``max_sweeps`` previous converted frames of the segment (timestamp, ego2global, lidar_path)
    instances     (not for the testing split) one dict per laser label of type VEHICLE, PEDESTRIAN or CYCLIST with
                  at least one lidar point:
        bbox_3d        [x, y, z_bottom, length, width, height, heading] in the vehicle (= mmdet3d LiDAR) frame,
                       z_bottom = center_z - height / 2 (mmdet3d's LiDARInstance3DBoxes origin (0.5, 0.5, 0))
        bbox_label_3d  0 Car (VEHICLE), 1 Pedestrian, 2 Cyclist; ``bbox_label`` the same
        num_lidar_pts  label.num_lidar_points_in_box
        difficulty     label.detection_difficulty_level as stored: 0 UNKNOWN, 1 LEVEL_1, 2 LEVEL_2 (Waymo's
                       evaluation reads UNKNOWN as LEVEL_1, or LEVEL_2 when the box has at most 5 points; the
                       metric, graddrop_mtl.det3d.evaluation, applies that rule)
        group_id, camera_id, bbox   as mmdet3d (camera projection of the label when the frame has one, else 0 / zeros)
"""
from __future__ import annotations

import numpy as np

__all__ = ['CLASS_NAMES', 'WAYMO_TYPES', 'sample_index', 'frame_info', 'gather_instances', 'CAMERA_TYPES']

#: mmdet3d's class names for the Waymo types it keeps, in label order.
CLASS_NAMES = ('Car', 'Pedestrian', 'Cyclist')
#: Waymo ``Label.Type`` value -> mmdet3d label (VEHICLE 1, PEDESTRIAN 2, CYCLIST 4; SIGN 3 and UNKNOWN 0 dropped).
WAYMO_TYPES = {1: 0, 2: 1, 4: 2}
#: mmdet3d's camera keys, in Waymo ``CameraName`` order (FRONT = 1 ... SIDE_RIGHT = 5).
CAMERA_TYPES = ('CAM_FRONT', 'CAM_FRONT_LEFT', 'CAM_FRONT_RIGHT', 'CAM_SIDE_LEFT', 'CAM_SIDE_RIGHT')
_CAM_SUFFIXES = ('_FRONT', '_FRONT_LEFT', '_FRONT_RIGHT', '_SIDE_LEFT', '_SIDE_RIGHT')
# Waymo front camera axes to the KITTI reference camera axes (x right, y down, z forward).
_T_FRONT_CAM_TO_REF = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                                [0.0, 0.0, 0.0, 1.0]])


def sample_index(prefix: int, segment: int, frame: int) -> str:
    """mmdet3d's sample id string: prefix, 3-digit segment index, 3-digit frame index (``'0002013'``)."""
    return f'{prefix}{segment:03d}{frame:03d}'


def gather_instances(frame) -> list[dict]:
    """The ``instances`` of a frame (see the module docstring)."""
    id_to_bbox: dict[str, list[float]] = {}
    id_to_cam: dict[str, int] = {}
    for cam_labels in frame.projected_lidar_labels:
        for label in cam_labels.labels:
            b = label.box
            id_to_bbox[label.id] = [b.center_x - b.length / 2, b.center_y - b.width / 2,
                                    b.center_x + b.length / 2, b.center_y + b.width / 2]
            id_to_cam[label.id] = cam_labels.name - 1
    instances = []
    group_id = 0
    for obj in frame.laser_labels:
        if obj.type not in WAYMO_TYPES or obj.num_lidar_points_in_box < 1:
            continue
        bbox, cam = [0.0, 0.0, 0.0, 0.0], 0
        for suffix in _CAM_SUFFIXES:
            if obj.id + suffix in id_to_bbox:
                bbox, cam = id_to_bbox[obj.id + suffix], id_to_cam[obj.id + suffix]
                break
        label = WAYMO_TYPES[obj.type]
        box = obj.box
        group_id += 1
        instances.append(dict(
            group_id=group_id,
            camera_id=cam,
            bbox=bbox,
            bbox_label=label,
            bbox_3d=np.array([box.center_x, box.center_y, box.center_z - box.height / 2, box.length, box.width,
                              box.height, box.heading]).astype(np.float32).tolist(),
            bbox_label_3d=label,
            num_lidar_pts=int(obj.num_lidar_points_in_box),
            difficulty=int(obj.detection_difficulty_level),
        ))
    return instances


def _camera_infos(frame, sample_idx: str) -> dict:
    images = {}
    by_name = {c.name: c for c in frame.context.camera_calibrations}
    for i, cam_key in enumerate(CAMERA_TYPES):
        calib = by_name.get(i + 1)
        if calib is None:
            continue
        cam_to_vehicle = np.asarray(calib.extrinsic.transform, dtype=np.float64).reshape(4, 4)
        lidar2cam = _T_FRONT_CAM_TO_REF @ np.linalg.inv(cam_to_vehicle)
        cam2img = np.zeros((3, 4))
        cam2img[0, 0], cam2img[1, 1], cam2img[0, 2], cam2img[1, 2] = list(calib.intrinsic)[:4]
        cam2img[2, 2] = 1
        images[cam_key] = dict(
            img_path=f'{sample_idx}.jpg', height=int(calib.height), width=int(calib.width),
            lidar2cam=lidar2cam.astype(np.float32).tolist(), cam2img=cam2img.astype(np.float32).tolist(),
            lidar2img=(cam2img @ lidar2cam).astype(np.float32).tolist())
    return images


def frame_info(frame, *, prefix: int, segment: int, frame_idx: int, previous: list[dict] | None = None,
               max_sweeps: int = 10, with_instances: bool = True) -> dict:
    """The info dict of one frame (see the module docstring). ``previous``: infos of the earlier converted frames
    of the same segment, oldest first (for ``lidar_sweeps``)."""
    sid = sample_index(prefix, segment, frame_idx)
    info: dict = dict(
        sample_idx=int(sid),
        timestamp=int(frame.timestamp_micros),
        ego2global=np.asarray(frame.pose.transform, dtype=np.float64).reshape(4, 4).astype(np.float32).tolist(),
        context_name=frame.context.name,
        images=_camera_infos(frame, sid),
        lidar_points=dict(lidar_path=f'{sid}.bin', num_pts_feats=6),
    )
    sweeps = []
    for prev in reversed((previous or [])[-max_sweeps:] if max_sweeps > 0 else []):
        sweeps.append(dict(timestamp=prev['timestamp'], ego2global=prev['ego2global'],
                           lidar_points=dict(lidar_path=prev['lidar_points']['lidar_path'])))
    if sweeps:
        info['lidar_sweeps'] = sweeps
    if with_instances:
        info['instances'] = gather_instances(frame)
    return info
