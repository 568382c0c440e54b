"""The shared part of ``tools/train.py`` and ``tools/test.py`` (mmdet3d's command line, mmengine's Runner)."""
from __future__ import annotations

import argparse
import os
import os.path as osp

import torch
from mmengine.config import Config, DictAction

from .launch import init_cpu_distributed, trust_local_checkpoints
from .memory import keep_freed_memory

#: checkpoint locations the tools load besides local files (see :func:`trust_url_checkpoints`).
URL_PREFIXES = ('http://', 'https://')


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


def check_checkpoint(path: str) -> None:
    """A clear error for a checkpoint argument that can not be loaded: a local file that does not exist, or a
    location other than a local path or an http(s) URL."""
    if path.startswith(URL_PREFIXES):
        return
    if '://' in path:
        raise ValueError(f'checkpoint {path!r}: only local files and {"/".join(URL_PREFIXES)} URLs are supported')
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} does not exist')


def _load_url_trusted(filename, map_location=None, model_dir=None):
    """mmengine's http(s) checkpoint loader (download once into ``<torch hub dir>/checkpoints``, on local rank 0
    first), loading with ``weights_only=False``."""
    from urllib.parse import urlparse

    from mmengine.dist import get_dist_info
    from torch.hub import download_url_to_file, get_dir

    model_dir = model_dir or osp.join(get_dir(), 'checkpoints')
    cached = osp.join(model_dir, osp.basename(urlparse(filename).path) or 'checkpoint.pth')
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.isfile(cached):
        os.makedirs(model_dir, exist_ok=True)
        download_url_to_file(filename, cached, progress=False)
    if world_size > 1:
        torch.distributed.barrier()
        if rank != 0 and not osp.isfile(cached):
            raise FileNotFoundError(f'checkpoint {filename!r}: rank 0 downloaded it to {cached}, which this rank '
                                    'can not see (download it to a shared path and pass the path)')
    return torch.load(cached, map_location=map_location, weights_only=False)


def trust_url_checkpoints() -> None:
    """Load http(s) checkpoints as mmengine does, but with ``torch.load(weights_only=False)``: mmengine 0.10.7's
    loader uses torch's default, ``weights_only=True`` since torch 2.6, which rejects mmengine's own checkpoints.
    Only load checkpoints you trust."""
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes=list(URL_PREFIXES), loader=_load_url_trusted, force=True)


def slurm_to_torch_env(default_port: int = 29500) -> None:
    """Set torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from srun's, as mmengine's
    slurm initialisation does, for the CPU path that starts the process group itself: the rank, the world size and
    the local rank always come from srun (a value inherited from the submitting shell would make every task the
    same rank); MASTER_ADDR and MASTER_PORT already set win."""
    import subprocess
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS') if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher slurm: {", ".join(missing)} not set; start the job with srun '
                           '(tools/slurm_train.sh, tools/slurm_test.sh)')
    os.environ['RANK'] = os.environ['SLURM_PROCID']          # srun's task decides, whatever the shell had set
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_PORT', str(default_port))
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ.get('SLURM_NODELIST', '')
        addr = subprocess.getoutput(f'scontrol show hostname {nodes} | head -n1').strip() if nodes else ''
        os.environ['MASTER_ADDR'] = addr or '127.0.0.1'


def prepare_environment(cfg: Config) -> None:
    """Checkpoints load under torch 2.13 (local files and http(s) URLs); distributed runs work without CUDA (gloo,
    CPU DDP); freed memory is kept for reuse (:func:`~graddrop_mtl.engine.memory.keep_freed_memory`, off with
    ``GRADDROP_KEEP_FREED_MEMORY=0``)."""
    keep_freed_memory()
    trust_local_checkpoints()
    trust_url_checkpoints()
    if cfg.launcher != 'none' and not torch.cuda.is_available():
        if cfg.launcher == 'slurm':
            slurm_to_torch_env()
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
