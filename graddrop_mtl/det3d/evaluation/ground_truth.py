"""Waymo ground truth from mmdet3d 1.4 (v2) info files, with Waymo's difficulty rule.

An info file is a pickle (``mmengine.load``) holding ``{'metainfo': {...}, 'data_list': [sample, ...]}``; each sample
has ``context_name``, ``timestamp``, ``instances`` and usually ``lidar_points['lidar_path']``, each instance
``bbox_3d`` (mmdet3d LiDAR box: bottom-centre x, y, z, dx, dy, dz, yaw), ``bbox_label_3d`` (index into the metainfo
classes, -1 for ignored classes), ``num_lidar_pts`` and ``difficulty`` (Waymo's ``detection_difficulty_level``:
0 unknown, 1, 2).

Levels follow ``compute_detection_metrics_main.cc`` (the tool that mmdet3d's ``WaymoMetric`` runs):

* a box with ``num_lidar_pts <= 0`` is dropped (a prediction on it is a false positive);
* difficulty 0 (not annotated): LEVEL_2 when ``num_lidar_pts <= 5``, else LEVEL_1;
* difficulty 1 or 2 is kept as annotated (an annotated LEVEL_1 box with few points stays LEVEL_1).

LEVEL_1 results count LEVEL_1 boxes as false negatives; LEVEL_2 results count both (a matched LEVEL_2 box is a true
positive in both, as in Waymo's metric).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Hashable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from .common import LEVEL_2_MAX_POINTS, mmdet3d_to_waymo_boxes, waymo_type_of


def waymo_level(difficulty: int, num_points: int) -> int:
    """Waymo detection level of a ground-truth box: 0 (dropped), 1 or 2 (see the module docstring)."""
    if num_points <= 0:
        return 0
    if difficulty in (1, 2):
        return int(difficulty)
    if difficulty == 0:
        return 2 if num_points <= LEVEL_2_MAX_POINTS else 1
    raise ValueError(f'difficulty {difficulty} is not a Waymo detection difficulty level (0, 1, 2)')


@dataclass
class GroundTruthFrame:
    """Ground truth of one frame (Waymo boxes, types, levels), dropped boxes removed."""

    boxes: np.ndarray       # float32 [N, 7], Waymo convention
    types: np.ndarray       # uint8 [N]
    levels: np.ndarray      # uint8 [N], 1 or 2


def info_class_names(metainfo: Mapping, fallback: Optional[Sequence[str]], ann_file: str) -> List[str]:
    """Class names indexed by ``bbox_label_3d``: ``metainfo['classes']``, else ``metainfo['categories']``
    (name -> index), else ``fallback`` (the dataset's classes)."""
    if 'classes' in metainfo:
        return list(metainfo['classes'])
    if 'categories' in metainfo:
        categories = metainfo['categories']
        names = [''] * (max(categories.values()) + 1 if categories else 0)
        for name, index in categories.items():
            names[index] = name
        return names
    if fallback is None:
        raise ValueError(f"{ann_file}: metainfo has neither 'classes' nor 'categories' and no class names were "
                         f'given (dataset_meta or the metric\'s classes)')
    return list(fallback)


class WaymoGroundTruth:
    """Per-frame Waymo ground truth read from an mmdet3d v2 info file.

    A prediction finds its frame by ``(context_name, timestamp)`` or by the file name of its point cloud
    (``lidar_points['lidar_path']`` of the info file, ``lidar_path`` of an mmdet3d sample): the keys that survive
    mmdet3d's stock pipelines. ``sample_idx`` is not a key: mmengine's ``BaseDataset.get_data_info`` replaces it
    with the position in the dataset (after ``load_interval``), which is not the info file's value.
    """

    def __init__(self, ann_file: str, class_names: Optional[Sequence[str]] = None, backend_args=None) -> None:
        import mmengine

        self.ann_file = ann_file
        data = mmengine.load(ann_file, backend_args=backend_args)
        if not isinstance(data, Mapping) or 'data_list' not in data:
            raise ValueError(f"{ann_file}: expected an mmdet3d v2 info dict with 'metainfo' and 'data_list', got "
                             f'{type(data).__name__}' + (f' with keys {sorted(data)}' if isinstance(data, Mapping)
                                                         else ''))
        self.class_names = info_class_names(data.get('metainfo', {}), class_names, ann_file)
        self.frames: List[GroundTruthFrame] = []
        self._by_key: Dict[Tuple[str, int], int] = {}
        self._by_lidar: Dict[str, int] = {}
        self._ambiguous_lidar: Set[str] = set()
        for position, sample in enumerate(data['data_list']):
            where = f'{ann_file}: data_list[{position}]'
            for key in ('context_name', 'timestamp', 'instances'):
                if key not in sample:
                    raise KeyError(f"{where} has no '{key}' (keys: {sorted(sample)})")
            self.frames.append(self._parse_frame(sample['instances'], where))
            self._by_key[(str(sample['context_name']), int(sample['timestamp']))] = position
            lidar = (sample.get('lidar_points') or {}).get('lidar_path')
            if lidar:
                name = lidar_file_name(lidar)
                if name in self._by_lidar:
                    self._ambiguous_lidar.add(name)
                self._by_lidar[name] = position

    def _parse_frame(self, instances: Sequence[Mapping], where: str) -> GroundTruthFrame:
        boxes, types, levels = [], [], []
        for k, inst in enumerate(instances):
            for key in ('bbox_3d', 'bbox_label_3d', 'num_lidar_pts'):
                if key not in inst:
                    raise KeyError(f"{where}['instances'][{k}] has no '{key}' (keys: {sorted(inst)})")
            label = int(inst['bbox_label_3d'])
            if label < 0:
                continue
            if label >= len(self.class_names):
                raise ValueError(f"{where}['instances'][{k}]: bbox_label_3d {label} is not an index into the "
                                 f'classes {self.class_names}')
            level = waymo_level(int(inst.get('difficulty', 0)), int(inst['num_lidar_pts']))
            if level == 0:
                continue
            box = np.asarray(inst['bbox_3d'], dtype=np.float64)
            if box.ndim != 1 or box.shape[0] < 7:
                raise ValueError(f"{where}['instances'][{k}]: bbox_3d must have 7 values "
                                 f'(x, y, z, dx, dy, dz, yaw), got {box.tolist()}')
            boxes.append(box[:7])
            types.append(waymo_type_of(self.class_names[label]))
            levels.append(level)
        return GroundTruthFrame(
            boxes=mmdet3d_to_waymo_boxes(np.array(boxes).reshape(-1, 7)),
            types=np.array(types, np.uint8), levels=np.array(levels, np.uint8))

    def __len__(self) -> int:
        return len(self.frames)

    def find(self, context_name: Optional[str] = None, timestamp: Optional[int] = None,
             lidar_path: Optional[str] = None, sample_idx: Hashable = None) -> int:
        """Position of a frame in the info file: by ``(context_name, timestamp)`` when both are given, else by the
        file name of ``lidar_path``. ``sample_idx`` only names the sample in errors."""
        if context_name is not None and timestamp is not None:
            key = (str(context_name), int(timestamp))
            if key in self._by_key:
                return self._by_key[key]
            raise KeyError(f'{self.ann_file}: no frame with context_name {key[0]!r} and timestamp {key[1]} '
                           f'(sample_idx {sample_idx!r})')
        if lidar_path is not None:
            name = lidar_file_name(lidar_path)
            if name in self._ambiguous_lidar:
                raise KeyError(f'{self.ann_file}: several frames have the point cloud file {name!r} (lidar_path '
                               f"{lidar_path!r}); keep 'context_name' and 'timestamp' in Pack3DDetInputs' meta_keys")
            if name in self._by_lidar:
                return self._by_lidar[name]
            raise KeyError(f'{self.ann_file}: no frame with the point cloud file {name!r} (lidar_path '
                           f'{lidar_path!r}, sample_idx {sample_idx!r})')
        raise KeyError(f'{self.ann_file}: sample {sample_idx!r} carries neither context_name/timestamp nor lidar_path, '
                       "so it cannot be matched to a frame (sample_idx is the dataset position, not the info file's); "
                       "keep 'lidar_path' (a default) or 'context_name' and 'timestamp' in Pack3DDetInputs' meta_keys")


def lidar_file_name(path: str) -> str:
    """The file name of a point cloud path (``'.../training/velodyne/1000002.bin'`` -> ``'1000002.bin'``)."""
    return str(path).replace('\\', '/').rsplit('/', 1)[-1]
