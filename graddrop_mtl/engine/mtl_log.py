"""The multitask wrapper's scalars in mmengine's message hub (``train/mtl/...``): the method's statistics, the
skipped steps, and per task the gradient norm at the shared activation, the weight and the kept fraction."""
from __future__ import annotations

from typing import Sequence

from torch import Tensor

from ..methods import Method


def log_step(hub, method: Method, names: Sequence[str], norms: Tensor | None, weights: Tensor | None,
             skipped_steps: int, log_per_task: bool) -> None:
    """Log one applied step (``norms``: per-task gradient norms, ``None`` when only their sum was taken)."""
    for key, value in method.last_stats().items():
        if key.startswith('kept_frac_'):
            if log_per_task:
                hub.update_scalar(f'train/mtl/kept/{names[int(key[10:])]}', value)
        else:
            hub.update_scalar(f'train/mtl/{key}', value)
    hub.update_scalar('train/mtl/skipped_steps', skipped_steps)
    if log_per_task and norms is not None:
        norm_list = norms.tolist()
        w = weights.reshape(len(names), -1).mean(1).tolist() if weights is not None else None
        for i, name in enumerate(names):
            hub.update_scalar(f'train/mtl/grad_norm/{name}', norm_list[i])
            if w is not None:
                hub.update_scalar(f'train/mtl/weight/{name}', w[i])
