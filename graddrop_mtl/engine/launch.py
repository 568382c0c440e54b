"""What ``tools/train.py`` and ``tools/test.py`` need beyond mmengine 0.10.7 on torch 2.13.

* ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, and mmengine 0.10.7's checkpoint loader does not
  pass it, so mmengine checkpoints (message-hub ``HistoryBuffer`` objects, numpy arrays and scalars) fail to load in
  any tool: ours, mmengine's ``Runner`` (``load_from``, ``resume``), mmdet3d's ``init_model``.
  :func:`allow_mmengine_checkpoints` (run by ``import graddrop_mtl``) allowlists exactly those classes for the
  ``weights_only`` unpickler, so checkpoints keep loading safely, with no environment variable and without
  ``weights_only=False``.
* mmengine's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally and its ``Runner.wrap_model`` passes
  ``device_ids=[LOCAL_RANK]`` to DDP; neither works on a CPU-only machine. :func:`init_cpu_distributed` starts the
  gloo process group itself (the Runner then skips ``init_dist``) and :class:`MMCPUDistributedDataParallel` drops
  ``device_ids``.
"""
from __future__ import annotations

import os
from pickle import UnpicklingError

import torch
import torch.distributed as torch_dist
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS


def _history_buffer_attribute(obj, name: str):
    """``getattr`` as a checkpoint may call it: only for ``HistoryBuffer``'s statistics methods.

    A ``HistoryBuffer`` pickles its dict of statistics methods (``min``, ``max``, ``mean``, ``current``, ...) as
    ``getattr(HistoryBuffer, name)``; the ``weights_only`` unpickler runs this function in place of ``getattr``, so
    a checkpoint cannot reach any other attribute."""
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_') \
            and callable(getattr(HistoryBuffer, name, None)):
        return getattr(HistoryBuffer, name)
    raise UnpicklingError(f'checkpoint asks for getattr({obj!r}, {name!r}); only public methods of mmengine\'s '
                          'HistoryBuffer are allowed (graddrop_mtl.engine.launch.allow_mmengine_checkpoints)')


def _numpy_globals() -> list:
    """numpy arrays, dtypes and scalars as pickled by numpy 1.x (``numpy.core``) and 2.x (``numpy._core``)."""
    import numpy as np
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    out: list = [np.ndarray, np.dtype]
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        out += [(multiarray._reconstruct, f'{module}._reconstruct'), (multiarray.scalar, f'{module}.scalar')]
    # the dtype classes (``numpy.dtype[float64]``, ...) that unpickling a dtype builds
    out += sorted({type(np.dtype(t)) for t in set(np.sctypeDict.values())}, key=lambda cls: cls.__name__)
    return out


def allow_mmengine_checkpoints() -> None:
    """Allowlist what mmengine checkpoints hold besides tensors for ``torch.load(weights_only=True)``: mmengine's
    ``HistoryBuffer`` (message hub) with its statistics methods, numpy arrays, dtypes and scalars. Idempotent."""
    torch.serialization.add_safe_globals([HistoryBuffer, (_history_buffer_attribute, 'builtins.getattr'),
                                          *_numpy_globals()])


def trust_local_checkpoints() -> None:
    """Kept for the tools that call it: :func:`allow_mmengine_checkpoints` (checkpoints load with mmengine's own
    loader and ``weights_only=True``; nothing is loaded with ``weights_only=False``)."""
    allow_mmengine_checkpoints()


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
