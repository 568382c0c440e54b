"""What both backends of the Waymo metric share: object types, the evaluation config, box conversion, the arrays.

The arrays follow the inputs of waymo-open-dataset's ``detection_metrics`` op (``metrics/ops/metrics_ops.cc``):
one row per box, boxes in Waymo's convention (centre x, y, z, length, width, height, heading), an int64 frame id per
box, the Waymo object type (``label_pb2.Label.Type``: 1 vehicle, 2 pedestrian, 3 sign, 4 cyclist), a float32 score
and a no-label-zone flag per prediction, the detection difficulty level (1 or 2) per ground-truth box.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

#: Waymo ``Label.Type`` values and the names the metric reports them under.
WAYMO_TYPES: Dict[str, int] = {'Vehicle': 1, 'Pedestrian': 2, 'Sign': 3, 'Cyclist': 4}
#: Waymo ``Label.Type`` value -> name used in the op's breakdown names (``OBJECT_TYPE_TYPE_VEHICLE_LEVEL_1``).
WAYMO_TYPE_PROTO_NAMES: Dict[int, str] = {1: 'TYPE_VEHICLE', 2: 'TYPE_PEDESTRIAN', 3: 'TYPE_SIGN', 4: 'TYPE_CYCLIST'}
#: Class names of mmdet3d datasets (``WaymoDataset.METAINFO['classes']`` is ('Car', 'Pedestrian', 'Cyclist')) and
#: their Waymo type; the mapping of mmdet3d's ``Prediction2Waymo.k2w_cls_map`` plus the Waymo names themselves.
CLASS_NAME_TO_WAYMO_TYPE: Dict[str, int] = {
    'Car': 1, 'Vehicle': 1, 'Pedestrian': 2, 'Sign': 3, 'Cyclist': 4,
}
#: Official IoU thresholds (``compute_detection_metrics_main.cc``), indexed by Waymo type name.
DEFAULT_IOU_THRESHOLDS: Dict[str, float] = {'Vehicle': 0.7, 'Pedestrian': 0.5, 'Sign': 0.5, 'Cyclist': 0.5}
#: ``detection_difficulty_level`` values reported, with the suffix of mmdet3d's keys ('L1', 'L2').
LEVELS: Dict[int, str] = {1: 'L1', 2: 'L2'}
#: Box types: '3d' is Waymo's ``TYPE_3D`` (7 dof), 'bev' its ``TYPE_2D`` (5 dof: x, y, length, width, heading).
BOX_TYPES: Tuple[str, ...] = ('3d', 'bev')
#: Waymo's rule for ground truth without an annotated difficulty (``compute_detection_metrics_main.cc``):
#: LEVEL_2 when the box holds at most this many lidar points.
LEVEL_2_MAX_POINTS = 5
SETUP_COMMAND = 'bash tools/setup_waymo_env.sh'


def default_score_cutoffs() -> List[float]:
    """The official 101 score cutoffs: 0.00, 0.01, ..., 0.99, 1.0 (``compute_detection_metrics_main.cc``)."""
    return [i * 0.01 for i in range(100)] + [1.0]


def waymo_type_of(class_name: str) -> int:
    """The Waymo type of an mmdet3d or Waymo class name ('Car' and 'Vehicle' are vehicles)."""
    try:
        return CLASS_NAME_TO_WAYMO_TYPE[class_name]
    except KeyError:
        raise ValueError(f'class {class_name!r} has no Waymo object type; known names: '
                         f'{sorted(CLASS_NAME_TO_WAYMO_TYPE)}') from None


def report_name_of(waymo_type: int) -> str:
    """The name a Waymo type is reported under ('Vehicle', 'Pedestrian', 'Sign', 'Cyclist')."""
    for name, value in WAYMO_TYPES.items():
        if value == waymo_type:
            return name
    raise ValueError(f'unknown Waymo object type {waymo_type}')


@dataclasses.dataclass(frozen=True)
class WaymoEvalConfig:
    """The metric's configuration; the fields of waymo-open-dataset's ``metrics_pb2.Config`` that the metric uses.

    Breakdown is always ``OBJECT_TYPE`` (one shard per Waymo type) with difficulty levels ``levels``; the matcher is
    always ``TYPE_HUNGARIAN``.

    Args:
        types: Waymo types to report (1 vehicle, 2 pedestrian, 3 sign, 4 cyclist), in report order.
        iou_thresholds: IoU threshold per Waymo type 1..4 (index 0 is ``TYPE_UNKNOWN``, as in the proto).
        score_cutoffs: prediction score cutoffs; precision and recall are measured at each.
        levels: difficulty levels to report (1, 2).
        box_types: '3d' and/or 'bev'.
        desired_recall_delta: the recall step of the AP integration (proto default 0.05).
        min_precision: precisions below this are set to 0 (proto default 0).
        min_heading_accuracy: matches whose heading accuracy is <= this count as neither TP nor FP (default -1).
    """

    types: Tuple[int, ...] = (1, 2, 4)
    iou_thresholds: Tuple[float, ...] = (0.0, 0.7, 0.5, 0.5, 0.5)
    score_cutoffs: Tuple[float, ...] = tuple(default_score_cutoffs())
    levels: Tuple[int, ...] = (1, 2)
    box_types: Tuple[str, ...] = BOX_TYPES
    desired_recall_delta: float = 0.05
    min_precision: float = 0.0
    min_heading_accuracy: float = -1.0

    def __post_init__(self) -> None:
        if len(self.iou_thresholds) != 5:
            raise ValueError(f'iou_thresholds needs 5 values (TYPE_UNKNOWN, VEHICLE, PEDESTRIAN, SIGN, CYCLIST), '
                             f'got {self.iou_thresholds}')
        for t in self.types:
            if t not in (1, 2, 3, 4):
                raise ValueError(f'types: unknown Waymo object type {t} (1 vehicle, 2 pedestrian, 3 sign, 4 cyclist)')
        for level in self.levels:
            if level not in LEVELS:
                raise ValueError(f'levels: {level} is not a Waymo difficulty level (1 or 2)')
        for box_type in self.box_types:
            if box_type not in BOX_TYPES:
                raise ValueError(f"box_types: {box_type!r} is not one of {BOX_TYPES}")
        if not self.score_cutoffs:
            raise ValueError('score_cutoffs must not be empty')
        if not 0.0 < self.desired_recall_delta <= 1.0:
            raise ValueError(f'desired_recall_delta must be in (0, 1], got {self.desired_recall_delta}')

    @classmethod
    def from_class_names(cls, class_names: Sequence[str], iou_thresholds: Optional[Mapping[str, float]] = None,
                         **kwargs) -> 'WaymoEvalConfig':
        """A config reporting the Waymo types of ``class_names`` ('Car' or 'Vehicle', 'Pedestrian', ...).

        ``iou_thresholds`` overrides the official thresholds per reported name ('Vehicle', 'Pedestrian', 'Sign',
        'Cyclist'; 'Car' is accepted for 'Vehicle').
        """
        types = []
        for name in class_names:
            t = waymo_type_of(name)
            if t not in types:
                types.append(t)
        thresholds = dict(DEFAULT_IOU_THRESHOLDS)
        for name, value in (iou_thresholds or {}).items():
            thresholds[report_name_of(waymo_type_of(name))] = float(value)
        iou = (0.0,) + tuple(thresholds[report_name_of(t)] for t in (1, 2, 3, 4))
        return cls(types=tuple(types), iou_thresholds=iou, **kwargs)

    def to_json_dict(self) -> dict:
        """Plain JSON-able dict (read by ``tools/waymo_official/compute_metrics.py``)."""
        return dict(types=list(self.types), iou_thresholds=list(self.iou_thresholds),
                    score_cutoffs=list(self.score_cutoffs), levels=list(self.levels),
                    box_types=list(self.box_types), desired_recall_delta=self.desired_recall_delta,
                    min_precision=self.min_precision, min_heading_accuracy=self.min_heading_accuracy)


@dataclasses.dataclass
class DetectionArrays:
    """Boxes of many frames as flat arrays (the layout of the official op's inputs).

    ``bbox`` is float32 [N, 7] in Waymo's convention (centre x, y, z, length, width, height, heading);
    ``frame_id`` int64 [N]; ``type`` uint8 [N] (Waymo types); ``score`` float32 [N] (predictions);
    ``overlap_nlz`` bool [N] (predictions); ``difficulty`` uint8 [N] (ground truth, 1 or 2).
    """

    bbox: np.ndarray
    frame_id: np.ndarray
    type: np.ndarray
    score: Optional[np.ndarray] = None
    overlap_nlz: Optional[np.ndarray] = None
    difficulty: Optional[np.ndarray] = None

    def __post_init__(self) -> None:
        self.bbox = np.ascontiguousarray(self.bbox, dtype=np.float32).reshape(-1, 7)
        n = len(self.bbox)
        self.frame_id = np.ascontiguousarray(self.frame_id, dtype=np.int64).reshape(-1)
        self.type = np.ascontiguousarray(self.type, dtype=np.uint8).reshape(-1)
        for name in ('score', 'overlap_nlz', 'difficulty'):
            value = getattr(self, name)
            if value is not None:
                dtype = {'score': np.float32, 'overlap_nlz': np.bool_, 'difficulty': np.uint8}[name]
                setattr(self, name, np.ascontiguousarray(value, dtype=dtype).reshape(-1))
        for name in ('frame_id', 'type', 'score', 'overlap_nlz', 'difficulty'):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f'DetectionArrays: {name} has {len(value)} entries, bbox has {n}')
        if not np.all(np.isfinite(self.bbox)):
            bad = int(np.nonzero(~np.isfinite(self.bbox).all(axis=1))[0][0])
            raise ValueError(f'DetectionArrays: box {bad} is not finite: {self.bbox[bad].tolist()}')

    def __len__(self) -> int:
        return len(self.bbox)

    @classmethod
    def concatenate(cls, parts: Iterable['DetectionArrays']) -> 'DetectionArrays':
        parts = list(parts)
        if not parts:
            return cls(np.zeros((0, 7), np.float32), np.zeros(0, np.int64), np.zeros(0, np.uint8))

        def cat(name):
            values = [getattr(p, name) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return cls(cat('bbox'), cat('frame_id'), cat('type'), cat('score'), cat('overlap_nlz'), cat('difficulty'))


def mmdet3d_to_waymo_boxes(boxes: np.ndarray) -> np.ndarray:
    """mmdet3d LiDAR boxes (x, y, z of the bottom centre, dx, dy, dz, yaw) -> Waymo boxes (float32 [N, 7]).

    Waymo's box centre is the geometric centre, so ``center_z = z + dz / 2``; length, width, height are dx, dy, dz
    and heading is the yaw (both conventions measure it counter-clockwise from +x); the same conversion as mmdet3d's
    ``Prediction2Waymo.parse_objects_from_origin``. Extra columns (velocities) are dropped.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        return np.zeros((0, 7), np.float32)
    if boxes.ndim != 2 or boxes.shape[1] < 7:
        raise ValueError(f'expected boxes with at least 7 columns (x, y, z, dx, dy, dz, yaw), got {boxes.shape}')
    out = boxes[:, :7].copy()
    out[:, 2] = boxes[:, 2] + boxes[:, 5] / 2
    return out.astype(np.float32)


def waymo_to_bev(boxes: np.ndarray) -> np.ndarray:
    """Waymo 7-dof boxes -> the op's 5-dof ``TYPE_2D`` boxes (x, y, length, width, heading)."""
    return np.ascontiguousarray(np.asarray(boxes, dtype=np.float32)[:, [0, 1, 3, 4, 6]])


# --------------------------------------------------------------------------------------------------------------------
# Results: the same structure from both backends.
# --------------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class BreakdownResult:
    """AP, APH and the precision/recall curve of one (box type, Waymo type, difficulty level)."""

    ap: float
    aph: float
    precision: List[float]
    recall: List[float]
    precision_ha: List[float]
    recall_ha: List[float]
    num_tps: List[int]
    num_fps: List[int]
    num_fns: List[int]


#: results[box_type][(waymo_type, level)] -> BreakdownResult
EvalResults = Dict[str, Dict[Tuple[int, int], BreakdownResult]]


def results_to_json(results: EvalResults) -> dict:
    return {box_type: {f'{report_name_of(t)}/{LEVELS[level]}': dataclasses.asdict(r)
                       for (t, level), r in per_box.items()}
            for box_type, per_box in results.items()}


def results_from_json(data: Mapping) -> EvalResults:
    out: EvalResults = {}
    for box_type, per_box in data.items():
        out[box_type] = {}
        for key, value in per_box.items():
            name, level = key.split('/')
            level_value = {v: k for k, v in LEVELS.items()}[level]
            out[box_type][(WAYMO_TYPES[name], level_value)] = BreakdownResult(**value)
    return out


def dumps_config(config: WaymoEvalConfig) -> str:
    return json.dumps(config.to_json_dict())
