"""BEV pictures without a display: the hook in mmdet3d's registry, and tools/test.py --show-dir on PointPillars."""
from __future__ import annotations

import glob
import os
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

RED = np.array([214, 39, 40])      # matplotlib's tab:red (predictions)
GREEN = np.array([44, 160, 44])    # tab:green (ground truth)


def _pixels_near(image: np.ndarray, colour: np.ndarray) -> int:
    return int((np.abs(image[..., :3].astype(int) - colour).sum(-1) < 60).sum())


def _sample(boxes, scores, gt=None, lidar_path='/data/velodyne/1000042.bin'):
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData
    sample = Det3DDataSample(metainfo=dict(lidar_path=lidar_path, sample_idx=1000042))
    pred = InstanceData()
    pred.bboxes_3d = LiDARInstance3DBoxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 7))
    pred.scores_3d = torch.tensor(scores, dtype=torch.float32)
    pred.labels_3d = torch.zeros(len(scores), dtype=torch.long)
    sample.pred_instances_3d = pred
    if gt is not None:
        sample.eval_ann_info = dict(gt_bboxes_3d=LiDARInstance3DBoxes(torch.tensor(gt, dtype=torch.float32)))
    return sample


def _hook(**kwargs):
    from mmdet3d.registry import HOOKS
    from mmdet3d.visualization import Det3DLocalVisualizer
    from mmengine.registry import DefaultScope
    from mmengine.visualization import Visualizer

    import graddrop_mtl.det3d.visualization  # noqa: F401  (registers the hook)
    if not Visualizer._instance_dict:
        Det3DLocalVisualizer.get_instance('bev_test_visualizer')
    # as in a PointPillars config (default_scope='mmdet3d'), whatever scope an earlier test left current
    with DefaultScope.overwrite_default_scope('mmdet3d'):
        return HOOKS.build(dict(type='BEVVisualizationHook', **kwargs))


def test_hook_writes_one_png_per_frame_with_boxes_above_the_threshold(tmp_path):
    from PIL import Image
    hook = _hook(draw=True, test_out_dir='bev', score_thr=0.5)
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='20260101_000000')
    rng = np.random.default_rng(0)
    points = torch.tensor(np.c_[rng.uniform(-15, 15, (2000, 2)), rng.uniform(-1, 1, (2000, 3))], dtype=torch.float32)
    box = [[5.0, 5.0, 0.0, 4.5, 2.0, 1.6, 0.3]]
    shown = _sample(box, [0.9], gt=[[-6.0, -6.0, 0.0, 4.5, 2.0, 1.6, 0.0]])
    hidden = _sample(box, [0.2], lidar_path='/data/velodyne/1000043.bin')   # below score_thr: not drawn
    hook.after_test_iter(runner, 0, dict(inputs=dict(points=[points, points])), [shown, hidden])
    out_dir = tmp_path / '20260101_000000' / 'bev'
    assert sorted(os.listdir(out_dir)) == ['1000042.png', '1000043.png']
    drawn = np.asarray(Image.open(out_dir / '1000042.png').convert('RGB'))
    empty = np.asarray(Image.open(out_dir / '1000043.png').convert('RGB'))
    assert _pixels_near(drawn, RED) > 50 and _pixels_near(drawn, GREEN) > 50
    assert _pixels_near(empty, RED) == 0 and _pixels_near(empty, GREEN) == 0   # no gt on that sample either


def test_frame_without_points_is_drawn(tmp_path):
    from graddrop_mtl.det3d.visualization import draw_bev
    path = draw_bev(str(tmp_path / 'empty.png'), np.zeros((0, 5), np.float32), np.zeros((0, 7)), np.zeros((0, 7)))
    assert os.path.getsize(path) > 0
    hook = _hook(draw=True, test_out_dir=str(tmp_path / 'abs'))
    runner = SimpleNamespace(work_dir=str(tmp_path), timestamp='t')
    hook.after_test_iter(runner, 0, dict(inputs=dict(points=[torch.zeros(0, 5)])), [_sample([], [])])
    assert os.listdir(tmp_path / 'abs') == ['1000042.png']     # an absolute --show-dir is used as it is


def test_hook_refuses_other_tasks_and_show():
    with pytest.raises(ValueError, match="vis_task='mono_det'"):
        _hook(vis_task='mono_det')
    with pytest.raises(ValueError, match='use --show-dir DIR instead of --show'):
        _hook(show=True)


@pytest.mark.slow
def test_tools_test_show_dir_writes_bev_pngs(synthetic_waymo, tmp_path, repo_root):
    """tools/test.py CONFIG CKPT --show-dir DIR (no --task: the config's hook says lidar_det) on a checkpoint of
    the demo config: one PNG per validation frame, named after the frame's point file."""
    root = str(synthetic_waymo / 'kitti_format') + '/'
    cfg = 'configs/pointpillars_waymo/pointpillars_mtl_graddrop_reduced-car_demo.py'
    opts = [f'train_dataloader.dataset.dataset.data_root={root}', f'val_dataloader.dataset.data_root={root}',
            f'test_dataloader.dataset.data_root={root}', f'val_evaluator.ann_file={root}waymo_infos_val.pkl',
            f'test_evaluator.ann_file={root}waymo_infos_val.pkl', 'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=2', 'param_scheduler.0.end=1', 'param_scheduler.1.begin=1',
            'param_scheduler.1.end=2', 'param_scheduler.1.T_max=1']
    env = dict(os.environ, OMP_NUM_THREADS='2', MPLBACKEND='', DISPLAY='')
    train = subprocess.run([sys.executable, 'tools/train.py', cfg, '--work-dir', str(tmp_path / 'train'),
                            '--cfg-options', *opts], cwd=repo_root, env=env, capture_output=True, text=True)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    test = subprocess.run([sys.executable, 'tools/test.py', cfg, str(tmp_path / 'train' / 'iter_2.pth'),
                           '--work-dir', str(tmp_path / 'test'), '--show-dir', 'bev', '--score-thr', '0.0',
                           '--cfg-options', *opts], cwd=repo_root, env=env, capture_output=True, text=True)
    assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
    pngs = sorted(glob.glob(str(tmp_path / 'test' / '*' / 'bev' / '*.png')))
    import pickle
    with open(root + 'waymo_infos_val.pkl', 'rb') as f:
        frames = pickle.load(f)['data_list']
    expected = sorted(osp.splitext(osp.basename(i['lidar_points']['lidar_path']))[0] + '.png' for i in frames)
    assert [osp.basename(p) for p in pngs] == expected
    from PIL import Image
    image = np.asarray(Image.open(pngs[0]).convert('RGB'))
    assert image.shape[0] > 500 and (image.sum(-1) < 200).sum() > 100   # the frame's points (black / grey)
