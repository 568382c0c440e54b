"""Shared fixtures of the 3D detection tests."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope='session')
def synthetic_waymo(tmp_path_factory) -> Path:
    """A tiny converted synthetic Waymo set; returns the out dir ``OUT``.

    2 training + 1 validation segments of 3 frames (TOP range image 64 x 512, 12 objects, seed 0):
    ``OUT/waymo_format/{training,validation}/*.tfrecord`` are the segments; ``OUT/kitti_format`` is the mmdet3d
    ``data_root``: ``training/velodyne/*.bin``, ``waymo_infos_{train,val,trainval}.pkl`` (instances with
    ``bbox_3d``, ``bbox_label_3d``, ``num_lidar_pts``, ``difficulty``; samples with ``context_name``,
    ``timestamp``), ``waymo_dbinfos_train.pkl`` and ``waymo_gt_database/``.
    """
    from graddrop_mtl.det3d.waymo.synthetic import SyntheticConfig, make_synthetic_dataset
    return make_synthetic_dataset(tmp_path_factory.mktemp('synthetic_waymo'),
                                  segments={'training': 2, 'validation': 1}, seed=0,
                                  config=SyntheticConfig(num_frames=3, width=512, num_objects=12))
