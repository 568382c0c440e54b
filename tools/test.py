"""Evaluate a checkpoint (mmdet3d's ``tools/test.py`` command line, mmengine's Runner).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR [--task lidar_det]] [--cfg-options k=v ...]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [...]

CHECKPOINT is a local file or an http(s) URL (downloaded once into torch's hub directory). ``--show-dir DIR`` draws
the predictions of every test sample into ``WORK_DIR/<timestamp>/DIR`` (or DIR itself if it is absolute) through
the config's ``default_hooks.visualization``: the PointPillars configs draw bird's-eye views (``--task lidar_det``,
their default); the sine, CelebA and CIFAR-100 configs have no pictures to draw (their curves are in TensorBoard).
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from graddrop_mtl.engine import cli  # noqa: E402

VIS_TASKS = ['mono_det', 'multi-view_det', 'lidar_det', 'lidar_seg', 'multi-modality_det']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model (graddrop-mtl)')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file or http(s) URL')
    parser.add_argument('--show', action='store_true', help='show prediction results (needs a display)')
    parser.add_argument('--show-dir', help='directory where painted images will be saved')
    parser.add_argument('--score-thr', type=float, default=0.1, help='bbox score threshold for visualisation')
    parser.add_argument('--task', type=str, choices=VIS_TASKS,
                        help='visualisation task (default: the one the config\'s visualization hook names)')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true', help='test time augmentation (the config\'s tta_model)')
    cli.add_common_args(parser)
    return parser.parse_args(argv)


def trigger_visualization_hook(cfg, args) -> None:
    """Switch the config's visualization hook on for ``--show`` / ``--show-dir`` (as mmdet3d's tools/test.py)."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise ValueError(
            f'--show/--show-dir: {args.config} has no default_hooks.visualization, so it draws no pictures. The '
            'PointPillars configs draw bird\'s-eye views; the sine, CelebA and CIFAR-100 experiments log curves '
            '(TensorBoard: tensorboard --logdir WORK_DIR)')
    hook.draw = True
    hook.show = args.show
    hook.wait_time = args.wait_time
    if args.show_dir:
        hook.test_out_dir = args.show_dir
    if args.task is not None:
        hook.vis_task = args.task
    elif hook.get('vis_task') is None:
        raise ValueError(f'--show/--show-dir: the visualization hook of {args.config} ({hook.get("type")}) names no '
                         f'vis_task; pass --task ({", ".join(VIS_TASKS)})')
    hook.score_thr = args.score_thr


def main(argv=None):
    args = parse_args(argv)
    cli.check_checkpoint(args.checkpoint)
    cfg = cli.load_config(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args)
    if args.tta:
        missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
        if missing:
            raise ValueError(f'--tta: {args.config} defines no {" and no ".join(missing)}; test-time augmentation '
                             'needs both (mmdet3d configs: tta_model=dict(type=...), tta_pipeline=[...])')
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    cli.prepare_environment(cfg)
    runner = cli.build_runner(cfg)
    runner.test()


if __name__ == '__main__':
    main()
