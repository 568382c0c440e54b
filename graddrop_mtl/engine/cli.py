"""The shared part of ``tools/train.py`` and ``tools/test.py`` (mmdet3d's command line, mmengine's Runner)."""
from __future__ import annotations

import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction

from .launch import init_cpu_distributed, trust_local_checkpoints
from .memory import keep_freed_memory


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='the directory to save logs and models')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings in the config, key=value pairs (xxx=yyy), e.g. '
                        'train_cfg.max_iters=10 "optim_wrapper.method.type=GradDrop"')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def load_config(args: argparse.Namespace) -> Config:
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    if not osp.isfile(args.config):
        raise FileNotFoundError(f'config file {args.config!r} does not exist')
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def prepare_environment(cfg: Config) -> None:
    """Checkpoints load under torch 2.13; distributed runs work without CUDA (gloo, CPU DDP); freed memory is kept
    for reuse (:func:`~graddrop_mtl.engine.memory.keep_freed_memory`, off with ``GRADDROP_KEEP_FREED_MEMORY=0``)."""
    keep_freed_memory()
    trust_local_checkpoints()
    if cfg.launcher != 'none' and not torch.cuda.is_available():
        backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'gloo')
        init_cpu_distributed('gloo' if backend == 'nccl' else backend)
        wrapper = cfg.get('model_wrapper_cfg') or {}
        if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
            cfg.model_wrapper_cfg = dict(wrapper, type='MMCPUDistributedDataParallel')


def build_runner(cfg: Config):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' not in cfg:
        return Runner.from_cfg(cfg)
    return RUNNERS.build(cfg)
