"""``task_grad_precision``: the precision of the float32 matmuls while the per-task gradients are taken (PyTorch's
``fp32_precision`` of the device's matmul backend). Only that pass changes; the one backward stays as configured."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Mapping

import torch

#: ``task_grad_precision`` values per device type: PyTorch's ``fp32_precision`` settings of the float32 matmuls
#: (``torch.backends.mkldnn.matmul`` on the CPU, ``torch.backends.cuda.matmul`` on CUDA).
TASK_GRAD_PRECISIONS = {'cpu': ('ieee', 'tf32', 'bf16'), 'cuda': ('ieee', 'tf32')}


def precision_for(device_type: str, precision: str | Mapping[str, str] | None) -> str | None:
    """The ``task_grad_precision`` for ``device_type``: the string itself, or its entry in a per-device dict
    (``None`` when the dict has none)."""
    if isinstance(precision, Mapping):
        return precision.get(device_type)
    return precision


def check_precision(precision: str | Mapping[str, str] | None) -> None:
    """Raise a ``ValueError`` naming the value when ``precision`` is not a valid ``task_grad_precision``."""
    if precision is None:
        return
    if isinstance(precision, str):
        known = sorted({p for ps in TASK_GRAD_PRECISIONS.values() for p in ps})
        if precision not in known:
            raise ValueError(f'task_grad_precision must be None, one of {known} or a dict device type -> precision, '
                             f'got {precision!r}')
        return
    if not isinstance(precision, Mapping):
        raise TypeError(f'task_grad_precision must be None, a string or a dict, got {type(precision).__name__}')
    for device_type, value in precision.items():
        allowed = TASK_GRAD_PRECISIONS.get(device_type)
        if allowed is None:
            raise ValueError(f'task_grad_precision: unknown device type {device_type!r}; expected one of '
                             f'{sorted(TASK_GRAD_PRECISIONS)}')
        if value is not None and value not in allowed:
            raise ValueError(f'task_grad_precision[{device_type!r}]={value!r}: expected None or one of {allowed}')


@contextmanager
def fp32_matmul_precision(device_type: str, precision: str | Mapping[str, str] | None):
    """Run the float32 matmuls of the block at ``precision`` (PyTorch's ``fp32_precision`` of the device's matmul
    backend: ``'ieee'`` exact, ``'tf32'``, ``'bf16'``: inputs rounded to bfloat16, products accumulated and returned
    in float32), and put the previous setting back. ``None``: leave it as it is. A dict gives one precision per
    device type (``dict(cpu='bf16', cuda='tf32')``)."""
    precision = precision_for(device_type, precision)
    if precision is None:
        yield
        return
    allowed = TASK_GRAD_PRECISIONS.get(device_type)
    if allowed is None or precision not in allowed:
        raise ValueError(f'task_grad_precision={precision!r} is not available on {device_type!r}; expected None or '
                         f'one of {allowed or ()} (a dict sets one per device type)')
    backend = torch.backends.mkldnn.matmul if device_type == 'cpu' else torch.backends.cuda.matmul
    previous = backend.fp32_precision
    backend.fp32_precision = precision
    try:
        yield
    finally:
        backend.fp32_precision = previous
