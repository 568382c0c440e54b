"""Synthetic Waymo Open Dataset segments in the real on-disk format, made by ray casting a simple scene.

Each segment is a ``.tfrecord`` of ``dataset_pb2.Frame`` protos, as Waymo ships them, with:

* the five lidars' calibrations: TOP (64 beams with listed, non-uniform inclinations from -17.6 to +2.5 degrees,
  75 m range) and FRONT, SIDE_LEFT, SIDE_RIGHT, REAR (only ``beam_inclination_min/max``, -80 to +30 degrees,
  20 m range, a 200-degree field of view), with extrinsics near the real mounting positions plus a small per-segment
  jitter of position and orientation;
* per lidar and return a zlib-compressed ``MatrixFloat`` range image ``[H, W, 4]`` (range, intensity, elongation,
  no-label-zone flag 1/-1; -1 everywhere without a return), an all-zero compressed camera projection
  ``MatrixInt32 [H, W, 6]``, and for the TOP lidar the per-pixel vehicle pose ``[H, W, 6]`` (roll, pitch, yaw, x,
  y, z): the ego vehicle moves during the 0.1 s sweep and the pose of each column is the pose at its firing time;
* ego poses of a vehicle driving with a constant speed and yaw rate (with a slight roll/pitch wobble), 10 Hz;
* the scene: the ground plane z = 0 (world frame) and vehicles, pedestrians, cyclists and signs, some moving, never
  overlapping each other or the ego vehicle's path; one rectangular no-label zone per segment
  (``frame.no_label_zones``; its pixels carry the flag 1). Pedestrians, cyclists and signs are single boxes.
  A vehicle is two stacked boxes whose shape differs front to back, so that its direction (which end is the front,
  the label's ``heading`` pointing forward) is observable from the points, as on a real car: a body over the whole
  length and ``VEHICLE_BODY_HEIGHT`` of the height, and on it a cabin up to the full height over the rear
  ``1 - VEHICLE_HOOD_LENGTH`` of the length; the front ``VEHICLE_HOOD_LENGTH`` is the low hood. A moving object
  moves along its heading (vehicles drive forwards);
* the range is the distance to the first surface along each pixel's ray plus Gaussian noise (clipped to 3 sigma);
  a fraction of the rays that hit an object get a second return from the next surface behind it; a few rays drop;
* laser labels (``frame.laser_labels``) in the vehicle frame: type, id stable across frames, box, speed, and
  ``num_lidar_points_in_box`` / ``num_top_lidar_points_in_box`` counted on the points the converter produces
  (both returns, no-label-zone points dropped), ``detection_difficulty_level`` 2 for boxes with at most 5 points,
  else 0 (UNKNOWN) or 1.

A labelled box is the physical box grown by ``LABEL_MARGIN`` on every side and starts ``LABEL_MARGIN`` above the
ground while the physical box starts at ``2 * LABEL_MARGIN``: every point on an object lies well inside its label
and every ground point well outside, so the label's point count does not depend on float rounding or on where
a box-membership test puts its boundary.

Example::

    from graddrop_mtl.det3d.waymo.synthetic import SyntheticConfig, write_segments
    paths = write_segments('data/waymo/waymo_format/training', num_segments=2, seed=0,
                           config=SyntheticConfig(num_frames=5, width=512))
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from waymo_open_dataset import dataset_pb2, label_pb2

from .frame import FrameRecord, encode_matrix_float, encode_matrix_int32_zeros
from .points import beam_inclinations, frame_to_points, pixel_azimuths, rotation_from_rpy
from .tfrecord import TFRecordWriter

__all__ = ['SyntheticConfig', 'make_segment', 'write_segments', 'make_synthetic_dataset', 'LABEL_MARGIN',
           'segment_filename', 'SPLIT_FIRST_INDEX', 'VEHICLE_BODY_HEIGHT', 'VEHICLE_HOOD_LENGTH', 'physical_boxes']

#: metres between a physical object's surface and its label box.
LABEL_MARGIN = 0.1
#: a vehicle's body (bonnet / boot level) as a fraction of its physical height; the cabin reaches the full height.
VEHICLE_BODY_HEIGHT = 0.4
#: the front fraction of a vehicle's physical length that has no cabin on it (the hood). Half: the step from hood
#: to cabin lies at the box centre, where a detector's positive anchors are, so that the pillars on either side of
#: an anchor differ in height (a shorter hood puts cabin on both sides of the centre, and a small detector trained
#: for minutes does not learn the direction from the ends alone; docs/benchmarks.md).
VEHICLE_HOOD_LENGTH = 0.5
_GROUND_CLEARANCE = 2 * LABEL_MARGIN  # bottom of the physical boxes above the ground
_TOP, _FRONT, _SIDE_LEFT, _SIDE_RIGHT, _REAR = 1, 2, 3, 4, 5
_SWEEP_S = 0.1  # duration of one TOP lidar revolution
_VEHICLE, _PEDESTRIAN, _SIGN, _CYCLIST = 1, 2, 3, 4
#: segment index of the first segment of each split (so that the splits never share a segment).
SPLIT_FIRST_INDEX = {'training': 0, 'validation': 1000, 'testing': 2000}

# type -> (probability, (length lo, hi), (width lo, hi), (height lo, hi), (speed lo, hi)); physical sizes.
_OBJECT_TYPES = {
    _VEHICLE: (0.5, (3.8, 5.2), (1.7, 2.1), (1.4, 2.0), (0.0, 10.0)),
    _PEDESTRIAN: (0.25, (0.4, 0.8), (0.4, 0.8), (1.5, 1.8), (0.0, 1.5)),
    _CYCLIST: (0.15, (1.5, 1.9), (0.5, 0.8), (1.5, 1.8), (2.0, 6.0)),
    _SIGN: (0.1, (0.2, 0.4), (0.5, 0.9), (2.0, 2.6), (0.0, 0.0)),
}
_INTENSITY = {_VEHICLE: (0.2, 0.9), _PEDESTRIAN: (0.1, 0.5), _CYCLIST: (0.1, 0.6), _SIGN: (0.8, 1.0)}


@dataclass
class SyntheticConfig:
    """Size and realism knobs of the generated segments.

    Attributes:
        num_frames: frames per segment (10 Hz).
        width: TOP range image width (Waymo: 2650). The short-range lidars' images scale with it (Waymo: 200 x 600
            at width 2650; at least 8 x 16).
        top_height: TOP beams (Waymo: 64).
        num_objects: objects per segment (vehicles, pedestrians, cyclists, signs; fewer if they do not fit).
        range_noise: standard deviation of the range noise in metres (clipped to 3 sigma).
        second_return_prob: probability that a ray hitting an object also returns from the surface behind it.
        dropout: probability that a ray that hits something returns nothing.
        scene_radius: objects start within this distance of the ego vehicle (metres).
        max_distance: objects stay within this distance of the ego vehicle in every frame (metres; objects that
            would leave it are not placed).
        type_weights: relative frequencies of (vehicle, pedestrian, cyclist, sign); default (0.5, 0.25, 0.15, 0.1).

    The defaults spread objects over the TOP lidar's range. The demo (``tools/demo.py``) models only a 38.4 m square
    around the vehicle and asks for a denser scene inside it: ``scene_radius=max_distance=17``, mostly vehicles.
    """

    num_frames: int = 5
    width: int = 512
    top_height: int = 64
    num_objects: int = 12
    range_noise: float = 0.01
    second_return_prob: float = 0.15
    dropout: float = 0.01
    scene_radius: float = 45.0
    max_distance: float = 60.0
    type_weights: tuple[float, float, float, float] | None = None

    def short_shape(self) -> tuple[int, int]:
        return max(8, round(200 * self.width / 2650)), max(16, round(600 * self.width / 2650))


@dataclass
class _Lidar:
    name: int
    height: int
    width: int
    max_range: float
    extrinsic: np.ndarray  # [4, 4]
    inclinations: list[float] | None  # listed (TOP) or None (min/max only)
    incl_min: float
    incl_max: float
    fov: float  # half horizontal field of view in the sensor frame (radians)

    def calibration(self) -> 'dataset_pb2.LaserCalibration':
        c = dataset_pb2.LaserCalibration(name=self.name, beam_inclination_min=self.incl_min,
                                         beam_inclination_max=self.incl_max)
        if self.inclinations is not None:
            c.beam_inclinations.extend(self.inclinations)
        c.extrinsic.transform.extend(self.extrinsic.reshape(-1).tolist())
        return c


@dataclass
class _Object:
    type: int
    id: str
    length: float  # label box size (physical + 2 margins)
    width: float
    height: float
    heading: float  # world
    start: np.ndarray  # world xy at t = 0
    speed: float
    intensity: tuple[float, float] = field(default=(0.1, 0.5))

    def center(self, t: float) -> np.ndarray:
        """World xy of the box centre at time ``t``."""
        return self.start + self.speed * t * np.array([np.cos(self.heading), np.sin(self.heading)])

    def radius(self) -> float:
        return 0.5 * float(np.hypot(self.length, self.width))


class _Ego:
    """Ego trajectory: constant speed and yaw rate, small roll/pitch wobble, on the ground (z = 0)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.xy0 = rng.uniform(-20.0, 20.0, 2)
        self.yaw0 = rng.uniform(-np.pi, np.pi)
        self.speed = rng.uniform(0.0, 8.0)
        self.yaw_rate = rng.uniform(-0.1, 0.1)
        self.wobble = 0.003
        self.phase = rng.uniform(0, 2 * np.pi, 2)

    def rpyxyz(self, t: np.ndarray) -> np.ndarray:
        """``[len(t), 6]`` roll, pitch, yaw, x, y, z at times ``t``."""
        t = np.asarray(t, dtype=np.float64)
        yaw = self.yaw0 + self.yaw_rate * t
        mid = self.yaw0 + 0.5 * self.yaw_rate * t
        x = self.xy0[0] + self.speed * t * np.cos(mid)
        y = self.xy0[1] + self.speed * t * np.sin(mid)
        roll = self.wobble * np.sin(3.0 * t + self.phase[0])
        pitch = self.wobble * np.sin(2.0 * t + self.phase[1])
        return np.stack([roll, pitch, yaw, x, y, np.zeros_like(t)], axis=-1)

    def matrix(self, t: float) -> np.ndarray:
        p = self.rpyxyz(np.array([t]))[0]
        m = np.eye(4)
        m[:3, :3] = rotation_from_rpy(p[0], p[1], p[2])
        m[:3, 3] = p[3:]
        return m


def _extrinsic(rng: np.random.Generator, xyz: tuple[float, float, float], yaw: float) -> np.ndarray:
    m = np.eye(4)
    roll, pitch = rng.uniform(-0.01, 0.01, 2)
    m[:3, :3] = rotation_from_rpy(roll, pitch, yaw + rng.uniform(-0.01, 0.01))
    m[:3, 3] = np.asarray(xyz) + rng.uniform(-0.02, 0.02, 3)
    return m


def _make_lidars(rng: np.random.Generator, cfg: SyntheticConfig) -> list[_Lidar]:
    # TOP: denser beams near the horizon, as the real sensor.
    u = np.linspace(0.0, 1.0, cfg.top_height)
    top_incl = np.deg2rad(-17.6 + 20.1 * (1 - (1 - u) ** 1.6))
    top_incl = np.sort(top_incl + rng.uniform(-1e-4, 1e-4, cfg.top_height))
    lidars = [_Lidar(_TOP, cfg.top_height, cfg.width, 75.0, _extrinsic(rng, (1.43, 0.0, 2.184), 0.0),
                     top_incl.tolist(), float(top_incl[0]), float(top_incl[-1]), np.pi)]
    h, w = cfg.short_shape()
    mounts = {_FRONT: ((4.07, 0.0, 0.69), 0.0), _SIDE_LEFT: ((3.245, 1.025, 0.98), np.pi / 2),
              _SIDE_RIGHT: ((3.245, -1.025, 0.98), -np.pi / 2), _REAR: ((-1.154, 0.0, 0.466), np.pi)}
    for name, (xyz, yaw) in mounts.items():
        lidars.append(_Lidar(name, h, w, 20.0, _extrinsic(rng, xyz, yaw), None, np.deg2rad(-80.0),
                             np.deg2rad(30.0), np.deg2rad(100.0)))
    return lidars


def _token(rng: np.random.Generator, n: int = 22) -> str:
    alphabet = np.array(list('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_'))
    return ''.join(rng.choice(alphabet, n))


def _make_objects(rng: np.random.Generator, cfg: SyntheticConfig, ego: _Ego) -> list[_Object]:
    times = np.arange(cfg.num_frames) * 0.1
    ego_xy = ego.rpyxyz(times)[:, 3:5]
    types = list(_OBJECT_TYPES)
    probs = np.array([_OBJECT_TYPES[t][0] for t in types] if cfg.type_weights is None else
                     [float(w) for w in cfg.type_weights])
    if probs.shape != (len(types),) or np.any(probs < 0) or probs.sum() <= 0:
        raise ValueError(f'type_weights must be {len(types)} non-negative numbers (vehicle, pedestrian, cyclist, '
                         f'sign) with a positive sum, got {cfg.type_weights!r}')
    objects: list[_Object] = []
    for _ in range(cfg.num_objects):
        for _attempt in range(100):
            typ = types[rng.choice(len(types), p=probs / probs.sum())]
            _, lr, wr, hr, sr = _OBJECT_TYPES[typ]
            dist = rng.uniform(4.0, cfg.scene_radius)
            ang = rng.uniform(-np.pi, np.pi)
            speed = rng.uniform(*sr) if rng.random() < 0.6 else 0.0
            obj = _Object(typ, _token(rng), rng.uniform(*lr) + 2 * LABEL_MARGIN, rng.uniform(*wr) + 2 * LABEL_MARGIN,
                          rng.uniform(*hr) + LABEL_MARGIN + (_GROUND_CLEARANCE - LABEL_MARGIN),
                          rng.uniform(-np.pi, np.pi), ego_xy[0] + dist * np.array([np.cos(ang), np.sin(ang)]),
                          speed, _INTENSITY[typ])
            centers = np.stack([obj.center(t) for t in times])
            d_ego = np.linalg.norm(centers - ego_xy, axis=1)
            if np.any(d_ego < obj.radius() + 3.5) or np.any(d_ego > cfg.max_distance):
                continue
            if any(np.any(np.linalg.norm(centers - np.stack([o.center(t) for t in times]), axis=1)
                          < obj.radius() + o.radius() + 0.3) for o in objects):
                continue
            objects.append(obj)
            break
    return objects


def _ray_cast(origins: np.ndarray, dirs: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray, float]]
              ) -> np.ndarray:
    """Distance along each ray to the ground and to each box: ``[1 + len(boxes), N]`` (inf: no hit).

    ``origins``/``dirs``: ``[N, 3]`` world frame, unit directions. ``boxes``: (centre [3], half sizes [3], heading).
    """
    n = origins.shape[0]
    out = np.full((1 + len(boxes), n), np.inf)
    down = dirs[:, 2] < -1e-9
    out[0, down] = -origins[down, 2] / dirs[down, 2]
    for k, (center, half, heading) in enumerate(boxes):
        c, s = np.cos(heading), np.sin(heading)
        rel = origins - center
        o = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], -1)
        d = np.stack([c * dirs[:, 0] + s * dirs[:, 1], -s * dirs[:, 0] + c * dirs[:, 1], dirs[:, 2]], -1)
        d = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1 = (-half - o) / d
        t2 = (half - o) / d
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
        hit = (t_near <= t_far) & (t_near > 1e-6)
        out[k + 1, hit] = t_near[hit]
    return out


def physical_boxes(obj: _Object, t: float) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """The physical boxes of ``obj`` at time ``t`` (world frame): ``(centre [3], half sizes [3], heading)``.

    One box for pedestrians, cyclists and signs; for a vehicle its body (full length, ``VEHICLE_BODY_HEIGHT`` of the
    height) and its cabin on top over the rear ``1 - VEHICLE_HOOD_LENGTH`` of the length (module docstring). Both
    lie inside the label box shrunk by ``LABEL_MARGIN``.
    """
    cxy = obj.center(t)
    size = np.array([obj.length - 2 * LABEL_MARGIN, obj.width - 2 * LABEL_MARGIN,
                     obj.height - (_GROUND_CLEARANCE - LABEL_MARGIN) - LABEL_MARGIN])
    if obj.type != _VEHICLE:
        zc = _GROUND_CLEARANCE + size[2] / 2
        return [(np.array([cxy[0], cxy[1], zc]), size / 2, obj.heading)]
    forward = np.array([np.cos(obj.heading), np.sin(obj.heading)])
    body_h = VEHICLE_BODY_HEIGHT * size[2]
    body = (np.array([cxy[0], cxy[1], _GROUND_CLEARANCE + body_h / 2]), np.array([size[0], size[1], body_h]) / 2,
            obj.heading)
    cabin_len = (1.0 - VEHICLE_HOOD_LENGTH) * size[0]
    cabin_xy = cxy - forward * (size[0] - cabin_len) / 2  # flush with the rear
    cabin_h = size[2] - body_h
    cabin = (np.array([cabin_xy[0], cabin_xy[1], _GROUND_CLEARANCE + body_h + cabin_h / 2]),
             np.array([cabin_len, size[1], cabin_h]) / 2, obj.heading)
    return [body, cabin]


def _render(rng: np.random.Generator, cfg: SyntheticConfig, lidar: _Lidar, origins: np.ndarray, dirs: np.ndarray,
            boxes: list, box_owner: list[int], objects: list[_Object], nlz: np.ndarray, fov_ok: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Both returns' range images ``[H, W, 4]`` of one lidar; ``box_owner[k]``: the object of ``boxes[k]``."""
    h, w = lidar.height, lidar.width
    t_all = _ray_cast(origins, dirs, boxes)
    first = np.argmin(t_all, axis=0)
    n = origins.shape[0]
    idx = np.arange(n)
    t1 = t_all[first, idx]
    ok1 = np.isfinite(t1) & (t1 < lidar.max_range) & fov_ok & (rng.random(n) >= cfg.dropout)

    t_rest = t_all.copy()
    t_rest[first, idx] = np.inf
    t_rest[t_rest <= t1] = np.inf
    second = np.argmin(t_rest, axis=0)
    t2 = t_rest[second, idx]
    ok2 = ok1 & (first > 0) & (rng.random(n) < cfg.second_return_prob) & np.isfinite(t2) & (t2 < lidar.max_range)

    images = []
    for ok, t, hit, damp in ((ok1, t1, first, 1.0), (ok2, t2, second, 0.4)):
        img = np.full((n, 4), -1.0, dtype=np.float32)
        noise = np.clip(rng.normal(0.0, cfg.range_noise, n), -3 * cfg.range_noise, 3 * cfg.range_noise)
        img[ok, 0] = (t + noise)[ok]
        lo = np.full(n, 0.02)
        hi = np.full(n, 0.15)
        for k, owner in enumerate(box_owner):
            sel = hit == k + 1
            lo[sel], hi[sel] = objects[owner].intensity
        img[ok, 1] = (damp * rng.uniform(lo, hi))[ok]
        img[ok, 2] = rng.uniform(0.0, 0.5, n)[ok]
        p = origins + dirs * np.where(np.isfinite(t), t, 0.0)[:, None]
        in_nlz = (p[:, 0] >= nlz[0]) & (p[:, 0] <= nlz[2]) & (p[:, 1] >= nlz[1]) & (p[:, 1] <= nlz[3])
        img[ok, 3] = np.where(in_nlz, 1.0, -1.0)[ok]
        images.append(img.reshape(h, w, 4))
    return images[0], images[1]


def _count_in_boxes(points: np.ndarray, boxes_v: np.ndarray) -> np.ndarray:
    """Points (vehicle frame) inside each box ``[x, y, z_center, l, w, h, heading]``: counts ``[len(boxes)]``."""
    counts = np.zeros(len(boxes_v), dtype=np.int64)
    xyz = points[:, :3].astype(np.float64)
    for k, (x, y, z, length, width, height, heading) in enumerate(boxes_v):
        rel = xyz - np.array([x, y, z])
        c, s = np.cos(heading), np.sin(heading)
        lx = c * rel[:, 0] + s * rel[:, 1]
        ly = -s * rel[:, 0] + c * rel[:, 1]
        counts[k] = int(np.count_nonzero((np.abs(lx) <= length / 2) & (np.abs(ly) <= width / 2)
                                         & (np.abs(rel[:, 2]) <= height / 2)))
    return counts


def segment_filename(context_name: str) -> str:
    """Waymo's file name of a segment: ``segment-<context name>_with_camera_labels.tfrecord``."""
    return f'segment-{context_name}_with_camera_labels.tfrecord'


def make_segment(seed: int, index: int = 0, config: SyntheticConfig | None = None) -> list['dataset_pb2.Frame']:
    """The frames of one synthetic segment, determined by ``(seed, index)``."""
    cfg = config or SyntheticConfig()
    rng = np.random.default_rng([seed, index])
    context_name = f'{int(rng.integers(10**18, 9 * 10**18)):020d}_{index * 20:04d}_000_{index * 20 + 20:04d}_000'
    base_ts = 1_550_000_000_000_000 + int(rng.integers(0, 10**12))
    lidars = _make_lidars(rng, cfg)
    ego = _Ego(rng)
    objects = _make_objects(rng, cfg, ego)
    nlz_c = ego.xy0 + rng.uniform(-30.0, 30.0, 2)
    nlz_half = rng.uniform(3.0, 6.0, 2)
    nlz = np.concatenate([nlz_c - nlz_half, nlz_c + nlz_half])  # world xmin, ymin, xmax, ymax

    context = dataset_pb2.Context(name=context_name)
    for lidar in lidars:
        context.laser_calibrations.append(lidar.calibration())
    context.stats.time_of_day = 'Day'
    context.stats.location = 'location_synthetic'
    context.stats.weather = 'sunny'
    for typ in sorted({o.type for o in objects}):
        context.stats.laser_object_counts.add(type=typ, count=sum(o.type == typ for o in objects))

    cp_cache: dict[tuple[int, int], bytes] = {}
    frames = []
    for f in range(cfg.num_frames):
        t_frame = f * 0.1
        frame_pose = ego.matrix(t_frame)
        # Physical boxes at this frame's time (world frame).
        boxes, box_owner = [], []
        for k, o in enumerate(objects):
            parts = physical_boxes(o, t_frame)
            boxes.extend(parts)
            box_owner.extend([k] * len(parts))

        frame = dataset_pb2.Frame(context=context, timestamp_micros=base_ts + f * 100_000)
        frame.pose.transform.extend(frame_pose.reshape(-1).tolist())
        nlz_proto = frame.no_label_zones.add(id=f'nlz_{index}')
        nlz_proto.x.extend([nlz[0], nlz[2], nlz[2], nlz[0]])
        nlz_proto.y.extend([nlz[1], nlz[1], nlz[3], nlz[3]])

        for lidar in lidars:
            calib = lidar.calibration()
            incl = beam_inclinations(calib, lidar.height)[::-1]  # row 0 = highest beam
            az = pixel_azimuths(lidar.extrinsic, lidar.width)
            ci, si = np.cos(incl)[:, None], np.sin(incl)[:, None]
            d_sensor = np.stack(np.broadcast_arrays(np.cos(az)[None] * ci, np.sin(az)[None] * ci, si), -1)
            d_vehicle = d_sensor.reshape(-1, 3) @ lidar.extrinsic[:3, :3].T
            o_vehicle = lidar.extrinsic[:3, 3]
            fov_ok = np.broadcast_to(np.abs(np.angle(np.exp(1j * az)))[None] <= lidar.fov,
                                     (lidar.height, lidar.width)).reshape(-1)
            pose_img = None
            if lidar.name == _TOP:
                # Pose of each column at its firing time, stored as float32; rays use the stored values.
                t_col = t_frame + ((np.arange(lidar.width) + 0.5) / lidar.width - 0.5) * _SWEEP_S
                col_pose = ego.rpyxyz(t_col).astype(np.float32)
                pose_img = np.broadcast_to(col_pose[None], (lidar.height, lidar.width, 6))
                pp = pose_img.reshape(-1, 6).astype(np.float64)
                rot = rotation_from_rpy(pp[:, 0], pp[:, 1], pp[:, 2])
                origins = np.einsum('nij,j->ni', rot, o_vehicle) + pp[:, 3:]
                dirs = np.einsum('nij,nj->ni', rot, d_vehicle)
            else:
                origins = np.broadcast_to(frame_pose[:3, :3] @ o_vehicle + frame_pose[:3, 3], d_vehicle.shape)
                dirs = d_vehicle @ frame_pose[:3, :3].T
            dirs = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
            ri1, ri2 = _render(rng, cfg, lidar, origins, dirs, boxes, box_owner, objects, nlz, fov_ok)

            laser = frame.lasers.add(name=lidar.name)
            shape = (lidar.height, lidar.width)
            if shape not in cp_cache:
                cp_cache[shape] = zlib.compress(encode_matrix_int32_zeros((lidar.height, lidar.width, 6)))
            for ri_proto, ri in ((laser.ri_return1, ri1), (laser.ri_return2, ri2)):
                ri_proto.range_image_compressed = zlib.compress(encode_matrix_float(ri))
                ri_proto.camera_projection_compressed = cp_cache[shape]
            if pose_img is not None:
                laser.ri_return1.range_image_pose_compressed = zlib.compress(encode_matrix_float(pose_img))

        # Labels in the vehicle frame of this frame, with point counts from the converted points.
        world_to_vehicle = np.linalg.inv(frame_pose)
        boxes_v = []
        for o in objects:
            cxy = o.center(t_frame)
            c_world = np.array([cxy[0], cxy[1], LABEL_MARGIN + o.height / 2, 1.0])
            c_v = world_to_vehicle @ c_world
            d_v = world_to_vehicle[:3, :3] @ np.array([np.cos(o.heading), np.sin(o.heading), 0.0])
            boxes_v.append([c_v[0], c_v[1], c_v[2], o.length, o.width, o.height, np.arctan2(d_v[1], d_v[0])])
        points = frame_to_points(FrameRecord(frame, f, 0, '<synthetic>'))
        counts = _count_in_boxes(points, np.asarray(boxes_v))
        top_counts = _count_in_boxes(points[points[:, 5] >= 0], np.asarray(boxes_v))
        for o, box, n_pts, n_top in zip(objects, boxes_v, counts, top_counts):
            label = frame.laser_labels.add(type=o.type, id=o.id, num_lidar_points_in_box=int(n_pts),
                                           num_top_lidar_points_in_box=int(n_top))
            b = label.box
            b.center_x, b.center_y, b.center_z, b.length, b.width, b.height, b.heading = map(float, box)
            v_v = world_to_vehicle[:3, :3] @ np.array([o.speed * np.cos(o.heading), o.speed * np.sin(o.heading), 0])
            label.metadata.speed_x, label.metadata.speed_y = float(v_v[0]), float(v_v[1])
            if n_pts <= 5:
                level = label_pb2.Label.LEVEL_2
            else:
                level = label_pb2.Label.LEVEL_1 if rng.random() < 0.3 else label_pb2.Label.UNKNOWN
            label.detection_difficulty_level = level
            label.tracking_difficulty_level = level
        frames.append(frame)
    return frames


def write_segments(out_dir: str | os.PathLike, *, num_segments: int = 2, seed: int = 0,
                   config: SyntheticConfig | None = None, first_index: int = 0) -> list[Path]:
    """Write ``num_segments`` synthetic segments into ``out_dir``; return their paths.

    Segment ``i`` is ``make_segment(seed, first_index + i, config)``, written to ``segment-<context
    name>_with_camera_labels.tfrecord`` (through a temporary name, so a file that exists is complete).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(num_segments):
        frames = make_segment(seed, first_index + i, config)
        path = out / segment_filename(frames[0].context.name)
        tmp = path.with_suffix('.tfrecord.tmp')
        with TFRecordWriter(tmp) as w:
            for frame in frames:
                w.write(frame.SerializeToString())
        os.replace(tmp, path)
        paths.append(path)
    return paths


def make_synthetic_dataset(root: str | os.PathLike, *, segments: dict[str, int] | None = None, seed: int = 0,
                           config: SyntheticConfig | None = None, convert: bool = True, workers: int = 0,
                           gt_database: bool = True) -> Path:
    """Write a synthetic dataset in Waymo's layout, ``root/waymo_format/{split}/*.tfrecord``, and (``convert``)
    convert it into ``root/kitti_format`` with :func:`~.converter.create_waymo_data` (``workers=0``: in this
    process). ``segments``: split -> number of segments (default ``{'training': 2, 'validation': 1}``).
    Returns ``root``."""
    root = Path(root)
    for split, n in (segments or {'training': 2, 'validation': 1}).items():
        if split not in SPLIT_FIRST_INDEX:
            raise ValueError(f'unknown split {split!r}; choose from {list(SPLIT_FIRST_INDEX)}')
        write_segments(root / 'waymo_format' / split, num_segments=n, seed=seed, config=config,
                       first_index=SPLIT_FIRST_INDEX[split])
    if convert:
        from .converter import create_waymo_data
        create_waymo_data(root, root, workers=workers, gt_database=gt_database)
    return root
