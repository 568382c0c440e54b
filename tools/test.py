"""Evaluate a checkpoint (mmdet3d's ``tools/test.py`` command line, mmengine's Runner).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [...]
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from graddrop_mtl.engine.cli import add_common_args, build_runner, load_config, prepare_environment  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model (graddrop-mtl)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--ceph', action='store_true', help='use ceph as data storage backend (unsupported here)')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images will be saved')
    parser.add_argument('--score-thr', type=float, default=0.1, help='bbox score threshold for visualisation')
    parser.add_argument('--task', type=str, choices=['mono_det', 'multi-view_det', 'lidar_det', 'lidar_seg',
                                                     'multi-modality_det'], help='visualisation task')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true', help='test time augmentation')
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint!r} does not exist')
    cfg = load_config(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        hooks = cfg.default_hooks
        if 'visualization' not in hooks:
            raise RuntimeError('--show/--show-dir need a "visualization" hook in default_hooks')
        hooks.visualization.draw = True
        hooks.visualization.show = args.show
        hooks.visualization.wait_time = args.wait_time
        if args.show_dir:
            hooks.visualization.test_out_dir = args.show_dir
        hooks.visualization.vis_task = args.task
        hooks.visualization.score_thr = args.score_thr
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    prepare_environment(cfg)
    runner = build_runner(cfg)
    runner.test()


if __name__ == '__main__':
    main()
