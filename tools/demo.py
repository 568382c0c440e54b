"""The README's first command: PointPillars with GradDrop on a small synthetic Waymo set, on the CPU.

    python tools/demo.py [--work-dir work_dirs/demo] [--iters 1600] [--config CONFIG]

1. writes synthetic Waymo segments (real .tfrecord Frame protos) and converts them with tools/create_data.py.
   The demo's scenes are denser than tools/make_synthetic_waymo.py's defaults and lie inside the demo config's
   38.4 m square: up to 10 objects per segment, 70% of them vehicles, all within 17 m of the ego vehicle in every
   frame (the defaults spread 12 objects, half of them vehicles, up to 60 m away: most would be outside the demo's
   range, unseen in training and, in validation, misses no detector of that range could find). Many short segments
   (32 training, 8 validation, 3 frames each) rather than few long ones, whose frames are nearly identical;
2. trains the reduced PointPillars (nine task losses, GradDrop at the neck output) with tools/train.py;
3. evaluates the checkpoint with the Waymo metric (tools/test.py) and prints the AP/APH table;
4. draws a bird's-eye view of predictions vs ground truth for one validation frame.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import pickle
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEFAULT_CONFIG = 'configs/pointpillars_waymo/pointpillars_mtl_graddrop_reduced-car_demo.py'


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--work-dir', default='work_dirs/demo')
    p.add_argument('--config', default=DEFAULT_CONFIG)
    p.add_argument('--iters', type=int, default=1600)
    p.add_argument('--train-segments', type=int, default=32)
    p.add_argument('--val-segments', type=int, default=8)
    p.add_argument('--frames', type=int, default=3, help='frames per segment')
    p.add_argument('--objects', type=int, default=10, help='objects per segment')
    p.add_argument('--scene-radius', type=float, default=17.0,
                   help='objects stay within this distance of the ego vehicle (metres; the demo config sees a '
                   '38.4 m square)')
    p.add_argument('--type-weights', type=float, nargs=4, default=[0.7, 0.15, 0.1, 0.05],
                   metavar=('VEHICLE', 'PEDESTRIAN', 'CYCLIST', 'SIGN'), help='relative object type frequencies')
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args()


def step(msg: str) -> None:
    print(f'\n=== {msg}', flush=True)


def make_demo_data(data: str, *, train_segments: int = 32, val_segments: int = 8, frames: int = 3, objects: int = 10,
                   scene_radius: float = 17.0, type_weights=(0.7, 0.15, 0.1, 0.05), seed: int = 0,
                   python: str | None = None) -> str:
    """Write the demo's synthetic Waymo segments under ``data/waymo_format`` and convert them into
    ``data/kitti_format`` (what the demo config and the PointPillars quick configs read); returns the latter.
    Validation segments use ``seed + 1000``. Also used by ``tools/analysis/compare_methods.py pointpillars``."""
    for split, n, s in (('training', train_segments, seed), ('validation', val_segments, seed + 1000)):
        run(None, ['tools/make_synthetic_waymo.py', '--out-dir', data, '--split', split, '--num-segments', str(n),
                   '--frames', str(frames), '--seed', str(s), '--objects', str(objects),
                   '--scene-radius', str(scene_radius), '--max-distance', str(scene_radius),
                   '--type-weights', *map(str, type_weights)], python=python)
    run(None, ['tools/create_data.py', 'waymo', '--root-path', data, '--out-dir', data, '--workers', '2',
               '--no-gt-database'], python=python)  # the demo's pipeline does not use ObjectSample
    return osp.join(data, 'kitti_format') + '/'


def run(args, cmd: list[str], python: str | None = None) -> None:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([python or sys.executable, *cmd], cwd=ROOT, env=env)
    if proc.returncode != 0:
        sys.exit(f'demo: {" ".join(cmd[:2])} failed (exit {proc.returncode})')


def ensure_environment() -> None:
    """Run tools/setup_env.sh (idempotent) and re-run this script with .venv's Python unless already inside it."""
    venv_python = osp.join(ROOT, '.venv', 'bin', 'python')
    if osp.realpath(sys.prefix) == osp.realpath(osp.join(ROOT, '.venv')) or os.environ.get('GRADDROP_NO_SETUP'):
        return
    step('0/4 set-up (tools/setup_env.sh; the first run builds mmcv, about 16 minutes)')
    if subprocess.run(['bash', osp.join(ROOT, 'tools', 'setup_env.sh')]).returncode != 0:
        sys.exit('demo: tools/setup_env.sh failed')
    os.execv(venv_python, [venv_python, osp.abspath(__file__), *sys.argv[1:]])


def main():
    ensure_environment()
    args = parse_args()
    start = time.time()
    work = osp.abspath(osp.join(ROOT, args.work_dir))
    data = osp.join(work, 'data', 'waymo')
    kitti = osp.join(data, 'kitti_format') + '/'
    stages = {}
    step('1/4 synthetic Waymo segments -> mmdet3d layout')
    make_demo_data(data, train_segments=args.train_segments, val_segments=args.val_segments, frames=args.frames,
                   objects=args.objects, scene_radius=args.scene_radius, type_weights=args.type_weights,
                   seed=args.seed)

    stages['data'] = time.time() - start
    step(f'2/4 training {args.iters} iterations (GradDrop at the neck output, nine task losses)')
    train_dir = osp.join(work, 'train')
    opts = [f'data_root={kitti}', f'train_dataloader.dataset.dataset.data_root={kitti}',
            f'val_dataloader.dataset.data_root={kitti}', f'test_dataloader.dataset.data_root={kitti}',
            f'val_evaluator.ann_file={kitti}waymo_infos_val.pkl', f'test_evaluator.ann_file={kitti}waymo_infos_val.pkl',
            f'train_cfg.max_iters={args.iters}', f'train_cfg.val_interval={args.iters}',
            f'default_hooks.checkpoint.interval={args.iters}', f'param_scheduler.1.end={args.iters}',
            f'param_scheduler.1.T_max={args.iters - 20}']
    run(args, ['tools/train.py', args.config, '--work-dir', train_dir, '--cfg-options', *opts])
    ckpt = osp.join(train_dir, f'iter_{args.iters}.pth')

    stages['training'] = time.time() - start - sum(stages.values())
    step('3/4 Waymo evaluation of the checkpoint (tools/test.py)')
    test_dir = osp.join(work, 'test')
    run(args, ['tools/test.py', args.config, ckpt, '--work-dir', test_dir, '--cfg-options', *opts])
    with open(osp.join(test_dir, 'waymo_ap.json')) as f:
        results = json.load(f)

    stages['evaluation'] = time.time() - start - sum(stages.values())
    step('4/4 bird\'s-eye view of one validation frame')
    picture = draw_frame(args.config, ckpt, kitti, opts, osp.join(work, 'bev.png'))
    stages['picture'] = time.time() - start - sum(stages.values())

    metrics = results.get('metrics', results)
    print('\nLEVEL_1 / LEVEL_2 vehicle AP and APH (%):')
    for key in sorted(k for k in metrics if 'Vehicle' in k):
        print(f'  {key:40s} {100 * float(metrics[key]):6.2f}')
    print(f'\ncheckpoint: {ckpt}\nlogs:       {train_dir} (training), {test_dir} (evaluation)\n'
          f'metrics:    {osp.join(test_dir, "waymo_ap.json")}\npicture:    {picture}\n'
          f'demo done in {time.time() - start:.0f} s (' + ', '.join(f'{k} {v:.0f} s' for k, v in stages.items()) + ')')


def draw_frame(config: str, ckpt: str, kitti: str, opts: list[str], out: str) -> str:
    sys.path.insert(0, ROOT)
    import numpy as np
    import torch
    from mmdet3d.apis import inference_detector, init_model
    from mmengine.config import Config, DictAction

    from graddrop_mtl.det3d.visualization import draw_bev
    from graddrop_mtl.engine.launch import trust_local_checkpoints
    trust_local_checkpoints()
    cfg = Config.fromfile(osp.join(ROOT, config))
    parser = argparse.ArgumentParser()
    parser.add_argument('--o', nargs='+', action=DictAction)
    cfg.merge_from_dict(parser.parse_args(['--o', *opts]).o)
    model = init_model(cfg, ckpt, device='cpu')
    with open(kitti + 'waymo_infos_val.pkl', 'rb') as f:
        info = pickle.load(f)['data_list'][0]
    pts_path = osp.join(kitti, 'training', 'velodyne', info['lidar_points']['lidar_path'])
    points = np.fromfile(pts_path, dtype=np.float32).reshape(-1, 6)
    with torch.no_grad():
        result, _ = inference_detector(model, pts_path)
    pred = result.pred_instances_3d
    gt = np.array([i['bbox_3d'] for i in info['instances'] if i['bbox_label_3d'] == 0]).reshape(-1, 7)
    return draw_bev(out, points, gt, pred.bboxes_3d.tensor.numpy(), pred.scores_3d.numpy(),
                    title=f'frame {info["sample_idx"]}: ground truth (green), predictions with score >= 0.3 (red)')


if __name__ == '__main__':
    main()
