"""What ``tools/train.py`` and ``tools/test.py`` need beyond mmengine 0.10.7 on torch 2.13.

* ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine 0.10.7's local checkpoint loader does
  not pass it, so its own checkpoints (which hold numpy scalars, message-hub buffers, configs) fail to load.
  :func:`trust_local_checkpoints` re-registers the loader for local files with ``weights_only=False``: use it only
  for checkpoints you trust, exactly as mmengine did before torch 2.6.
* mmengine's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally and its ``Runner.wrap_model`` passes
  ``device_ids=[LOCAL_RANK]`` to DDP; neither works on a CPU-only machine. :func:`init_cpu_distributed` starts the
  gloo process group itself (the Runner then skips ``init_dist``) and :class:`MMCPUDistributedDataParallel` drops
  ``device_ids``.
"""
from __future__ import annotations

import os
import os.path as osp

import torch
import torch.distributed as torch_dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner.checkpoint import CheckpointLoader


def _load_local_trusted(filename, map_location=None):
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return torch.load(filename, map_location=map_location, weights_only=False)


def trust_local_checkpoints() -> None:
    """Load local checkpoints with ``torch.load(weights_only=False)`` (mmengine's behaviour before torch 2.6)."""
    CheckpointLoader.register_scheme(prefixes='', loader=_load_local_trusted, force=True)


def init_cpu_distributed(backend: str = 'gloo', timeout_s: int = 1800) -> None:
    """Initialise the default process group from torchrun's environment, without touching CUDA."""
    if torch_dist.is_initialized():
        return
    from datetime import timedelta
    torch_dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), timeout=timedelta(seconds=timeout_s))


@MODEL_WRAPPERS.register_module()
class MMCPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU modules: ignores the ``device_ids`` that the Runner passes."""

    def __init__(self, module, device_ids=None, **kwargs):
        kwargs.pop('output_device', None)
        super().__init__(module=module, device_ids=None, **kwargs)
