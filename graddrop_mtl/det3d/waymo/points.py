"""Range images to point clouds in the vehicle frame, in NumPy: the computation of Waymo's ``frame_utils`` /
``range_image_utils`` and of mmdet3d 1.4's Waymo converter, without TensorFlow.

For a lidar with extrinsic ``E`` (sensor to vehicle), range image ``[H, W, 4]`` (range, intensity, elongation,
is-in-no-label-zone) and beam inclinations ``b`` (ascending; row 0 of the image is the *highest* beam):

* inclination of row ``i``: ``b[H - 1 - i]`` (uniform ``(i + 0.5) / H * (max - min) + min`` reversed, when the
  calibration gives only ``beam_inclination_min/max``);
* azimuth of column ``j``: ``((W - j - 0.5) / W * 2 - 1) * pi - atan2(E[1, 0], E[0, 0])``;
* point in the sensor frame ``r * (cos az cos inc, sin az cos inc, sin inc)``, then ``E`` to the vehicle frame;
* TOP lidar only: each pixel has its own vehicle pose ``P`` (``range_image_pose_compressed``: roll, pitch, yaw,
  x, y, z, with ``R = Rz(yaw) Ry(pitch) Rx(roll)``), so the point goes to the world frame with ``P`` and back to the
  vehicle frame of the frame timestamp with ``inverse(frame.pose)`` (rolling-shutter correction).

:func:`frame_to_points` then reproduces mmdet3d 1.4's ``Waymo2KITTI.save_lidar``: pixels with range > 0 and not in
a no-label zone (channel 3 != 1), lidars in calibration order sorted by name (TOP, FRONT, SIDE_LEFT, SIDE_RIGHT,
REAR), all first returns then all second returns, row-major pixel order within an image, and six float32 features
per point: ``x, y, z, intensity, elongation, index`` where ``index`` is ``(return * H + row) * W + col`` for the
TOP lidar and -1 for the others. Arithmetic is float64. The official path computes in float32: on the synthetic
segments (poses within about 100 m of the map origin) the two agree to about 3e-5 m, mostly float32 rounding of the
azimuths at 75 m range; on real segments, whose poses lie kilometres from the origin, TensorFlow takes the TOP
lidar's points through world coordinates in float32, whose resolution there is about 0.5 mm (at 4 km).
"""
from __future__ import annotations

import numpy as np

from .frame import LASER_NAMES, FrameRecord, WaymoFrameError, decode_matrix

__all__ = ['rotation_from_rpy', 'beam_inclinations', 'pixel_azimuths', 'range_image_to_points',
           'decode_lasers', 'frame_to_points', 'lasers_to_points', 'NUM_POINT_FEATURES', 'TOP']

TOP = 1
NUM_POINT_FEATURES = 6  # x, y, z, intensity, elongation, range-image index (mmdet3d's 'num_pts_feats')


def rotation_from_rpy(roll: np.ndarray, pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` for arrays of angles: ``[..., 3, 3]``."""
    cr, sr = np.cos(roll), np.sin(roll)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cy, sy = np.cos(yaw), np.sin(yaw)
    return np.stack([
        np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
        np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
        np.stack([-sp, cp * sr, cp * cr], -1),
    ], -2)


def beam_inclinations(calibration, height: int) -> np.ndarray:
    """The calibration's beam inclinations, ascending (``[height]``; uniform from min/max when not listed)."""
    if len(calibration.beam_inclinations):
        incl = np.asarray(calibration.beam_inclinations, dtype=np.float64)
    else:
        lo, hi = calibration.beam_inclination_min, calibration.beam_inclination_max
        incl = (0.5 + np.arange(height, dtype=np.float64)) / height * (hi - lo) + lo
    return incl


def pixel_azimuths(extrinsic: np.ndarray, width: int) -> np.ndarray:
    """Azimuth (sensor frame) of each range-image column: ``[width]``."""
    az_correction = np.arctan2(extrinsic[1, 0], extrinsic[0, 0])
    ratios = (np.arange(width, 0, -1, dtype=np.float64) - 0.5) / width
    return (ratios * 2.0 - 1.0) * np.pi - az_correction


def range_image_to_points(range_image: np.ndarray, calibration, *, pixel_pose: np.ndarray | None = None,
                          frame_pose: np.ndarray | None = None, filter_no_label_zone: bool = True,
                          where: str = 'range image') -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valid pixels of one range image as points in the vehicle frame.

    Args:
        range_image: ``[H, W, C]`` (C >= 1; channel 0 range, channel 3 no-label-zone flag when present).
        calibration: the lidar's ``LaserCalibration`` proto.
        pixel_pose: ``[H, W, 6]`` per-pixel vehicle pose (TOP lidar), with ``frame_pose`` ``[4, 4]``.
        filter_no_label_zone: drop pixels whose channel 3 is 1 (in a no-label zone), as mmdet3d does.
        where: names the image in error messages.

    Returns:
        ``(xyz [N, 3] float64, rows [N], cols [N])`` in row-major pixel order.
    """
    if range_image.ndim != 3:
        raise WaymoFrameError(f'{where}: range image must be [H, W, C], got shape {range_image.shape}')
    height, width = range_image.shape[:2]
    incl = beam_inclinations(calibration, height)
    if incl.shape[0] != height:
        raise WaymoFrameError(f'{where}: {incl.shape[0]} beam inclinations for a range image of {height} rows')
    incl = incl[::-1]
    extrinsic = np.asarray(calibration.extrinsic.transform, dtype=np.float64)
    if extrinsic.size != 16:
        raise WaymoFrameError(f'{where}: extrinsic has {extrinsic.size} values, expected 16')
    extrinsic = extrinsic.reshape(4, 4)
    azimuth = pixel_azimuths(extrinsic, width)

    rng = range_image[..., 0]
    mask = rng > 0
    if filter_no_label_zone and range_image.shape[-1] > 3:
        mask &= range_image[..., 3] != 1.0
    rows, cols = np.nonzero(mask)
    r = rng[rows, cols].astype(np.float64)
    cos_incl = np.cos(incl)[rows]
    xyz = np.stack([np.cos(azimuth)[cols] * cos_incl * r, np.sin(azimuth)[cols] * cos_incl * r,
                    np.sin(incl)[rows] * r], axis=-1)
    xyz = xyz @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    if pixel_pose is not None:
        if frame_pose is None:
            raise ValueError('frame_pose must be given with pixel_pose')
        if pixel_pose.shape[:2] != (height, width) or pixel_pose.shape[-1] != 6:
            raise WaymoFrameError(f'{where}: pixel pose of shape {pixel_pose.shape} does not match the range image '
                                  f'{range_image.shape} (expected [{height}, {width}, 6])')
        pose = pixel_pose[rows, cols].astype(np.float64)
        rot = rotation_from_rpy(pose[:, 0], pose[:, 1], pose[:, 2])
        xyz = np.einsum('nij,nj->ni', rot, xyz) + pose[:, 3:]
        world_to_vehicle = np.linalg.inv(np.asarray(frame_pose, dtype=np.float64).reshape(4, 4))
        xyz = xyz @ world_to_vehicle[:3, :3].T + world_to_vehicle[:3, 3]
    return xyz, rows, cols


def decode_lasers(rec: FrameRecord) -> tuple[dict[int, list[np.ndarray]], np.ndarray | None]:
    """Decode every range image of a frame: ``({laser: [first, second]}, top pixel pose [H, W, 6] or None)``."""
    images: dict[int, list[np.ndarray]] = {}
    top_pose = None
    for laser in rec.frame.lasers:
        pair = []
        for ret, ri in enumerate((laser.ri_return1, laser.ri_return2)):
            if not ri.range_image_compressed:
                raise WaymoFrameError(f'{rec.where()}: laser {LASER_NAMES.get(laser.name, laser.name)} has no '
                                      f'range_image_compressed for return {ret + 1}')
            what = f'{rec.where()}, laser {LASER_NAMES.get(laser.name, laser.name)}, return {ret + 1}'
            try:
                pair.append(decode_matrix(ri.range_image_compressed, 'float32', what=what))
            except Exception as e:  # zlib / wire errors: name the frame and laser
                raise WaymoFrameError(f'{what}: cannot decode the range image: {e}') from e
        images[laser.name] = pair
        if laser.name == TOP:
            what = f'{rec.where()}, laser TOP pixel pose'
            if not laser.ri_return1.range_image_pose_compressed:
                raise WaymoFrameError(f'{what}: range_image_pose_compressed is empty')
            try:
                top_pose = decode_matrix(laser.ri_return1.range_image_pose_compressed, 'float32', what=what)
            except Exception as e:
                raise WaymoFrameError(f'{what}: cannot decode: {e}') from e
    return images, top_pose


def frame_to_points(rec: FrameRecord, *, filter_no_label_zone: bool = True) -> np.ndarray:
    """The frame's point cloud as mmdet3d 1.4's Waymo converter writes it: ``[N, 6]`` float32 (see module doc)."""
    images, top_pose = decode_lasers(rec)
    return lasers_to_points(rec, images, top_pose, filter_no_label_zone=filter_no_label_zone)


def lasers_to_points(rec: FrameRecord, images: dict[int, list[np.ndarray]], top_pose: np.ndarray | None, *,
                     filter_no_label_zone: bool = True) -> np.ndarray:
    """:func:`frame_to_points` on range images already decoded by :func:`decode_lasers`."""
    frame = rec.frame
    frame_pose = np.asarray(frame.pose.transform, dtype=np.float64)
    if frame_pose.size != 16:
        raise WaymoFrameError(f'{rec.where()}: frame pose has {frame_pose.size} values, expected 16')
    calibrations = sorted(frame.context.laser_calibrations, key=lambda c: c.name)
    parts = []
    for ret in (0, 1):
        for calib in calibrations:
            name = LASER_NAMES.get(calib.name, calib.name)
            where = f'{rec.where()}, laser {name}, return {ret + 1}'
            if calib.name not in images:
                raise WaymoFrameError(f'{rec.where()}: calibration for laser {name} but no range image')
            ri = images[calib.name][ret]
            is_top = calib.name == TOP
            if is_top and top_pose is None:
                raise WaymoFrameError(f'{where}: the TOP lidar has no pixel pose')
            xyz, rows, cols = range_image_to_points(
                ri, calib, pixel_pose=top_pose if is_top else None, frame_pose=frame_pose if is_top else None,
                filter_no_label_zone=filter_no_label_zone, where=where)
            feats = np.empty((xyz.shape[0], NUM_POINT_FEATURES), dtype=np.float32)
            feats[:, :3] = xyz
            feats[:, 3] = ri[rows, cols, 1]
            feats[:, 4] = ri[rows, cols, 2]
            if is_top:
                h, w = ri.shape[:2]
                feats[:, 5] = (ret * h + rows) * w + cols
            else:
                feats[:, 5] = -1
            parts.append(feats)
    if not parts:
        return np.zeros((0, NUM_POINT_FEATURES), dtype=np.float32)
    return np.concatenate(parts, axis=0)
