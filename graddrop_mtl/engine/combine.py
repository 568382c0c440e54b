"""From per-task gradients at the shared activation(s) to what the one backward sends: the method's combined
gradient for the trunk and the (method-weighted) task losses for the heads, plus a gradient penalty where the method
has one. The methods see one activation: several shared outputs are flattened into one and split back."""
from __future__ import annotations

import torch
from torch import Tensor

from ..methods import Method
from ..methods.base import combine_with_coefficients, flat_per_problem, sq_norms
from ..methods.blocks import TaskBlocks


def task_norms(grads: list[Tensor] | TaskBlocks) -> Tensor:
    """Per-task L2 norms over all shared activations (non-finite iff a gradient holds inf or nan)."""
    if isinstance(grads, TaskBlocks):
        return grads.sq_norms().sqrt()
    return sum(sq_norms(g.detach().reshape(g.shape[0], -1)) for g in grads).sqrt()


def flatten(grads: list[Tensor], acts: list[Tensor], problem_dims: int = 0) -> tuple[Tensor, Tensor]:
    """Per-task gradients ``[T, *A_j.shape]`` of several activations as one stack, and the activations as one
    tensor (problem and batch dims kept when all activations share them)."""
    if len(acts) == 1:
        return grads[0], acts[0].detach()
    lead = 1 + problem_dims   # keep the problem dims and the batch dim, flatten the rest
    heads = {tuple(a.shape[:lead]) for a in acts}
    if len(heads) != 1:
        return torch.cat([g.flatten(1) for g in grads], 1), torch.cat([a.detach().flatten() for a in acts])
    return (torch.cat([g.flatten(lead + 1) for g in grads], -1),
            torch.cat([a.detach().flatten(lead) for a in acts], -1))


def unflatten(flat: Tensor, acts: list[Tensor]) -> list[Tensor]:
    """Inverse of :func:`flatten` for one combined gradient: one tensor per activation."""
    if len(acts) == 1:
        return [flat]
    if flat.dim() == 1:
        sizes = [a.numel() for a in acts]
        return [p.reshape(a.shape) for p, a in zip(flat.split(sizes), acts)]
    sizes = [a[(0,) * (flat.dim() - 1)].numel() for a in acts]
    return [p.reshape(a.shape) for p, a in zip(flat.split(sizes, -1), acts)]


def summed_trunk_grads(total: list[Tensor] | TaskBlocks) -> list[Tensor]:
    """The trunk gradients from the gradient of the summed loss taken as one task."""
    if isinstance(total, TaskBlocks):
        return [total.base[0] if total.patch is None and total.base is not None else total.linear_combination()]
    return [g[0] for g in total]


def combine(method: Method, grads: list[Tensor] | TaskBlocks, acts: list[Tensor], losses: Tensor, generator,
            problem_dims: int = 0) -> list[Tensor]:
    """``method.combine`` (``combine_blocks`` for :class:`TaskBlocks`): one trunk gradient per activation."""
    if isinstance(grads, TaskBlocks):
        return [method.combine_blocks(grads, activation=acts[0].detach(), losses=losses, generator=generator)]
    flat, activation = flatten(grads, acts, problem_dims)
    out = method.combine(flat, activation=activation, losses=losses, generator=generator, problem_dims=problem_dims)
    return unflatten(out, acts)


def weighted_sum(grads: list[Tensor] | TaskBlocks, weights: Tensor, acts: list[Tensor],
                 problem_dims: int = 0) -> list[Tensor]:
    """``sum_i w_i G_i``, one trunk gradient per activation: a loss weighting's trunk gradient from per-task
    gradients (what ``LossWeighting.combine`` returns, without calling the method again). ``weights``:
    ``[T, *problems]``, used detached."""
    w = weights.detach()
    if isinstance(grads, TaskBlocks):
        return [grads.linear_combination(w.reshape(grads.n_tasks))]
    flat, _ = flatten(grads, acts, problem_dims)
    coef = w.reshape(flat.shape[0], -1).t()                                      # [P, T]
    return unflatten(combine_with_coefficients(flat_per_problem(flat, problem_dims), coef, flat), acts)


def head_loss(task_losses: list[Tensor], weights: Tensor | None, extra: Tensor | None = None) -> Tensor:
    """``sum_i w_i L_i`` (plain sum when ``weights`` is ``None``) plus the method's ``extra`` loss term: what the
    heads' parameters (and a method's own parameters, through ``w`` and ``extra``) get the gradient of."""
    if weights is None:
        total = sum(v.sum() for v in task_losses)
    else:
        total = sum((w * v).sum() for w, v in zip(weights.to(torch.float32), task_losses))
    return total if extra is None else total + extra.sum()


def add_penalty(method: Method, task_losses: list[Tensor], acts: list[Tensor], trunk_grads: list[Tensor],
                heads: Tensor, problem_dims: int = 0) -> tuple[list[Tensor], Tensor]:
    """A method's gradient penalty ``method.penalty(dL/dA)`` (``method.create_graph``): its gradient is added to the
    trunk gradients and the penalty to the head loss. Only the summed loss's gradient needs a graph (one double
    backward), not T per-task gradients."""
    total = torch.autograd.grad(sum(v.sum() for v in task_losses), acts, retain_graph=True, create_graph=True,
                                allow_unused=True, materialize_grads=True)
    penalty = method.penalty(flatten([t.unsqueeze(0) for t in total], acts, problem_dims)[0])
    pen_grads = torch.autograd.grad(penalty, acts, retain_graph=True, allow_unused=True, materialize_grads=True)
    return [g.detach() + p for g, p in zip(trunk_grads, pen_grads)], heads + penalty
