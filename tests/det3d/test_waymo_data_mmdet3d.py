"""The stock mmdet3d 1.4 WaymoDataset and 3-class pipeline load our converted synthetic data."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest


def _config():
    import mmdet3d
    from mmengine.config import Config
    path = Path(mmdet3d.__file__).parent / '.mim' / 'configs' / '_base_' / 'datasets' / 'waymoD5-3d-3class.py'
    return Config.fromfile(str(path))


def _counts(points: np.ndarray, boxes: np.ndarray) -> list[int]:
    """Points inside each bottom-centre LiDAR box, by mmdet3d's own test (the one its GT database uses)."""
    from mmdet3d.structures.ops import box_np_ops
    return box_np_ops.points_in_rbbox(points[:, :3], boxes).sum(axis=0).tolist()


@pytest.fixture
def registered():
    """mmdet3d's DATASETS registry, with mmdet3d as the default scope while the test runs (as in its tools)."""
    import mmdet3d.datasets  # noqa: F401  (registers WaymoDataset and the transforms)
    from mmdet3d.registry import DATASETS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        yield DATASETS


def test_stock_dataset_and_3class_train_pipeline(synthetic_waymo, registered):
    """Boxes out of the stock augmenting pipeline contain exactly the labels' point counts."""
    cfg = _config()
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset.dataset)  # inside RepeatDataset
    assert ds_cfg.type == 'WaymoDataset'
    ds_cfg.update(data_root=str(synthetic_waymo / 'kitti_format') + '/', load_interval=1)
    dataset = registered.build(ds_cfg)
    assert len(dataset) == 6
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        expected = [inst['num_lidar_pts'] for inst in info['instances']]
        labels = [inst['bbox_label_3d'] for inst in info['instances']]
        item = dataset[i]
        sample = item['data_samples']
        points = item['inputs']['points'].numpy()
        assert points.shape[1] == 5  # x, y, z, intensity, elongation (use_dim=5 of our 6 features)
        boxes = sample.gt_instances_3d.bboxes_3d
        assert type(boxes).__name__ == 'LiDARInstance3DBoxes'
        assert sample.gt_instances_3d.labels_3d.tolist() == labels
        assert _counts(points, boxes.tensor.numpy()) == expected


def test_stock_val_pipeline_packs_metric_fields(synthetic_waymo, registered):
    cfg = _config()
    ds_cfg = copy.deepcopy(cfg.val_dataloader.dataset)
    ds_cfg.update(data_root=str(synthetic_waymo / 'kitti_format') + '/')
    dataset = registered.build(ds_cfg)
    assert len(dataset) == 3
    item = dataset[1]
    meta = item['data_samples'].metainfo
    info = dataset.get_data_info(1)
    assert meta['context_name'] == info['context_name'] and meta['timestamp'] == info['timestamp']
    assert meta['sample_idx'] == 1  # mmengine's get_data_info replaces sample_idx by the dataset index
    ann = info['eval_ann_info']
    counts = _counts(np.fromfile(info['lidar_path'], np.float32).reshape(-1, 6), ann['gt_bboxes_3d'].tensor.numpy())
    assert counts == [inst['num_lidar_pts'] for inst in info['instances']]


def test_ground_truth_database_feeds_object_sample(synthetic_waymo, registered):
    """mmdet3d's ObjectSample with the 3-class config's db_sampler pastes our GT database objects with their
    points: every box of the result holds the point count its label / database entry says."""
    import pickle

    from mmdet3d.registry import TRANSFORMS
    cfg = _config()
    data_root = str(synthetic_waymo / 'kitti_format') + '/'
    db_sampler = copy.deepcopy(cfg.db_sampler)
    db_sampler.update(data_root=data_root, info_path=data_root + 'waymo_dbinfos_train.pkl',
                      prepare=dict(filter_by_difficulty=[-1], filter_by_min_points=dict(Car=1, Pedestrian=1,
                                                                                          Cyclist=1)))
    pipeline = [copy.deepcopy(cfg.train_pipeline[0]), copy.deepcopy(cfg.train_pipeline[1]),
                dict(type='ObjectSample', db_sampler=db_sampler),
                dict(type='Pack3DDetInputs', keys=['points', 'gt_bboxes_3d', 'gt_labels_3d'])]
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset.dataset)
    ds_cfg.update(data_root=data_root, load_interval=1, pipeline=pipeline)
    dataset = registered.build(ds_cfg)
    dbinfos = pickle.loads(Path(data_root, 'waymo_dbinfos_train.pkl').read_bytes())
    db_count = {tuple(np.round(e['box3d_lidar'], 4)): e['num_points_in_gt'] for v in dbinfos.values() for e in v}
    assert TRANSFORMS.get('ObjectSample') is not None
    np.random.seed(0)
    pasted = 0
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        n_orig = len(info['instances'])
        item = dataset[i]
        boxes = item['data_samples'].gt_instances_3d.bboxes_3d.tensor.numpy()
        counts = _counts(item['inputs']['points'].numpy(), boxes)
        assert counts[:n_orig] == [inst['num_lidar_pts'] for inst in info['instances']]
        for box, n in zip(boxes[n_orig:], counts[n_orig:]):
            assert db_count[tuple(np.round(box, 4))] == n
            pasted += 1
    assert pasted > 0
