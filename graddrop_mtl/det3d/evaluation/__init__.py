"""Waymo detection evaluation without the Bazel-built binary: ``WaymoAPMetric`` (mmdet3d ``METRICS``) with an
``official`` backend (waymo-open-dataset's op in ``.venv-waymo``, through a subprocess) and a ``native`` one (NumPy and
Numba). See README.md in this folder."""
from .common import DetectionArrays, WaymoEvalConfig, mmdet3d_to_waymo_boxes
from .ground_truth import WaymoGroundTruth, waymo_level
from .iou import box_iou_matrix
from .native import evaluate_native
from .official import WaymoEnvironmentError, evaluate_official, official_available
from .waymo_metric import WaymoAPMetric

__all__ = ['WaymoAPMetric', 'DetectionArrays', 'WaymoEvalConfig', 'WaymoGroundTruth', 'WaymoEnvironmentError',
           'box_iou_matrix', 'evaluate_native', 'evaluate_official', 'official_available', 'mmdet3d_to_waymo_boxes',
           'waymo_level']
