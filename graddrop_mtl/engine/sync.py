"""Cross-rank synchronisation of what the multitask wrapper decides per step.

Under DDP every rank takes its per-task gradients from its own local batch (as the authors' lingvo code does inside
each replica) and DDP averages the combined gradients in the one backward. What must agree on every rank besides the
parameters: the method's statistics (so that stateful methods such as GradNorm and MGDA compute the same weights),
the decision to skip a step, and the loss scale. All of it goes through mmengine's ``dist`` helpers, which pick the
backend's communication device (gloo: CPU, nccl: CUDA) and are no-ops in a single process.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmengine import dist
from torch import Tensor


def world_size() -> int:
    """Number of processes of the default group (1 without ``torch.distributed``)."""
    return dist.get_world_size()


def sum_across_ranks(t: Tensor) -> Tensor:
    """``t`` summed over all processes: a new tensor of ``t``'s shape, dtype and device (``t`` is left as it is).

    This is the ``reducer`` the methods receive through ``Method.set_reducer``."""
    out = t.detach().clone()
    dist.all_reduce(out, op='sum')
    return out


def any_across_ranks(flags: Sequence[bool], device: torch.device | str = 'cpu') -> list[bool]:
    """Element-wise logical OR of ``flags`` over all processes (one all-reduce), so every rank takes the same
    decision."""
    if world_size() == 1:
        return [bool(f) for f in flags]
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op='max')
    return [bool(v) for v in t.tolist()]


def same_on_all_ranks(value: int) -> int:
    """Rank 0's ``value`` on every rank (e.g. a seed drawn from a per-rank global RNG)."""
    if world_size() == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64)
    dist.broadcast(t, src=0)
    return int(t.item())


def min_across_ranks(value: int | None) -> int | None:
    """The smallest ``value`` over all processes (``None`` on any rank: ``None``), so that a decision taken from a
    per-rank measurement (e.g. the memory available) is the same on every rank."""
    if world_size() == 1:
        return value
    t = torch.tensor([-1 if value is None else int(value)], dtype=torch.int64)
    unknown = torch.tensor([1 if value is None else 0], dtype=torch.int64)
    dist.all_reduce(t, op='min')
    dist.all_reduce(unknown, op='max')
    return None if int(unknown.item()) else int(t.item())
