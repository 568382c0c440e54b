"""Mixed precision for the multitask wrapper: autocast and a loss scaler, as mmengine's ``AmpOptimWrapper`` has them.

The multitask step takes T per-task gradients of the scaled losses before the one backward, so it checks for an
overflow twice: in the per-task gradients (the wrapper, all-reduced across ranks) and, as ``AmpOptimWrapper`` does,
in the parameter gradients (``GradScaler.unscale_``). Both must come to ONE decision on all ranks with ONE scale:

* in more than one process the scaler is torch's ``ShardedGradScaler``, a ``GradScaler`` whose ``unscale_``
  all-reduces the parameter gradients' overflow flag (mmengine's ``AmpOptimWrapper(use_fsdp=True)`` uses it too);
  DDP's gradients are already averaged, so this only matters where a rank's gradients were not, but it makes the
  skip a collective decision by construction;
* a per-task overflow (already all-reduced by the wrapper) lowers the scale by :meth:`LossScaling.backoff`, which is
  ``GradScaler``'s own update for a skipped step (scale times ``backoff_factor``, growth tracker reset), done through
  the scaler's public state dict.

mmengine's ``AmpOptimWrapper`` itself cannot be the base class: it refuses to run without an accelerator and
its ``backward`` scales one summed loss, while here the scale enters before the per-task gradients.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Mapping

import torch
from torch import Tensor

from ..methods.blocks import TaskBlocks
from .sync import world_size

AMP_DTYPES = {'float16': torch.float16, 'bfloat16': torch.bfloat16, None: None}
_LOW = (torch.float16, torch.bfloat16)


class LossScaling:
    """Autocast dtype and loss scaler from the wrapper's ``amp`` argument (see ``MultiTaskOptimWrapper``).

    ``amp``: ``False``/``None`` (off), ``True`` or ``dict(dtype=..., loss_scale=...)``. ``dtype``: ``'float16'``
    (default on CUDA), ``'bfloat16'`` (default on the CPU) or ``None`` (no autocast). ``loss_scale``: ``'dynamic'``
    (default for float16), a number (static: never changes, as ``AmpOptimWrapper``'s float ``loss_scale``), a dict of
    ``GradScaler`` arguments, or ``None`` (default for bfloat16).
    """

    def __init__(self, amp: bool | Mapping[str, Any] | None, device: str) -> None:
        self.device = device
        self.dtype: torch.dtype | None = None
        self.static_scale: float | None = None
        self._scaler_kwargs: dict[str, Any] | None = None
        self._scaler = None
        self._pending_state: dict | None = None
        if not amp:
            return
        cfg = {} if amp is True else dict(amp)
        unknown = set(cfg) - {'dtype', 'loss_scale'}
        if unknown:
            raise ValueError(f'amp: unknown keys {sorted(unknown)}; expected dtype=..., loss_scale=...')
        dtype_name = cfg.get('dtype', 'float16' if device == 'cuda' else 'bfloat16')
        if dtype_name not in AMP_DTYPES:
            raise ValueError(f"amp dtype must be 'float16', 'bfloat16' or None, got {dtype_name!r}")
        self.dtype = AMP_DTYPES[dtype_name]
        scale = cfg.get('loss_scale', 'dynamic' if self.dtype is torch.float16 else None)
        if scale is None:
            return
        if scale == 'dynamic':
            self._scaler_kwargs = {}
        elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
            self.static_scale = float(scale)
            self._scaler_kwargs = dict(init_scale=float(scale))
        elif isinstance(scale, Mapping):
            self._scaler_kwargs = dict(scale)
        else:
            raise ValueError(f"amp loss_scale must be 'dynamic', a number, a dict or None, got {scale!r}")

    # ---------------------------------------------------------------------------------------------- the scaler
    @property
    def enabled(self) -> bool:
        return self._scaler_kwargs is not None

    @property
    def scaler(self) -> torch.amp.GradScaler | None:
        """The loss scaler, built on first use so that it sees the process group the Runner set up: a
        ``ShardedGradScaler`` (overflow flag all-reduced) in more than one process, else a ``GradScaler``."""
        if self._scaler_kwargs is None:
            return None
        if self._scaler is None:
            if world_size() > 1:
                from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler
                self._scaler = ShardedGradScaler(self.device, **self._scaler_kwargs)
            else:
                self._scaler = torch.amp.GradScaler(self.device, **self._scaler_kwargs)
            if self._pending_state is not None:
                self._scaler.load_state_dict(self._pending_state)
                self._pending_state = None
        return self._scaler

    def autocast(self):
        """The forward's autocast context (a no-op without an autocast dtype)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device, dtype=self.dtype)

    def current_scale(self, device: torch.device) -> float:
        """This step's loss scale (1.0 without a scaler); also creates the scaler's state on ``device``."""
        if self.scaler is None:
            return 1.0
        return float(self.scaler.scale(torch.ones((), device=device)))

    @staticmethod
    def unscale(grads: list[Tensor] | TaskBlocks, scale: float) -> list[Tensor] | TaskBlocks:
        """Per-task gradients of the scaled (mixed-precision) losses -> float32 gradients of the losses."""
        if isinstance(grads, TaskBlocks):
            if scale == 1.0 and grads.dtype not in _LOW:
                return grads
            return grads.scaled(torch.full((grads.n_tasks,), 1.0 / scale, device=grads.device), dtype=torch.float32)
        if scale == 1.0:
            return [g.float() if g.dtype in _LOW else g for g in grads]
        return [g.float() / scale for g in grads]

    def backoff(self) -> tuple[float, float]:
        """Lower the scale after an overflow of the per-task gradients, as ``GradScaler.update`` does after a
        skipped step (times ``backoff_factor``, growth tracker reset); a static scale stays. Returns (old, new)."""
        scaler = self.scaler
        state = scaler.state_dict()
        old = state['scale']
        if self.static_scale is None:
            state.update(scale=old * state['backoff_factor'], _growth_tracker=0)
            scaler.load_state_dict(state)
        return old, scaler.get_scale()

    def step(self, optimizer: torch.optim.Optimizer, clip_grad, **kwargs) -> None:
        """``AmpOptimWrapper.step``: unscale, ``clip_grad()`` (if given), the scaler's step (skipped when a
        parameter gradient is not finite on any rank) and its update."""
        scaler = self.scaler
        scaler.unscale_(optimizer)
        if clip_grad is not None:
            clip_grad()
        scaler.step(optimizer, **kwargs)
        scaler.update(self.static_scale)

    # ---------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict | None:
        if self.scaler is None:
            return None
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self._scaler_kwargs is None:
            return
        if self._scaler is None:
            self._pending_state = dict(state)
        else:
            self._scaler.load_state_dict(state)
