"""The plain sum (the baseline), the gradient-norm penalty, and the composition of a weighting with a combiner."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor

from .base import Method, build_method, check_grads, register_method, sum_tasks, weights_view
from .blocks import TaskBlocks


@register_method
class Sum(Method):
    r"""The baseline: the trunk receives :math:`\sum_i G_i`, exactly what ``loss.backward()`` on the summed loss
    would send. The wrapper needs no per-task gradients for it (:attr:`needs_task_grads`), only on the steps
    where it logs per-task statistics."""

    needs_task_grads = False

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        return sum_tasks(grads)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        return blocks.linear_combination()


@register_method
class GradPenalty(Sum):
    r"""Gradient-norm penalty at the shared activation (the rebuttal's GP baseline).

    The training loss becomes :math:`\sum_i L_i + \lambda \lVert \sum_i G_i \rVert_2^2` with
    :math:`G_i = \partial L_i / \partial A`. The penalty is differentiated through the per-task gradients (double
    backward), so it reaches the heads and the trunk. :meth:`combine` returns the plain sum; because
    :attr:`create_graph` is set, the :class:`~graddrop_mtl.engine.MultiTaskOptimWrapper` also takes the gradient of the
    summed loss with its graph (one double backward, not T), adds :meth:`penalty` of it to the head loss and the
    penalty's gradient with respect to :math:`A` to the trunk gradient. :meth:`penalty` accepts stacked per-task
    gradients ``[T, ...]`` or the summed one as ``[1, ...]``.

    Args:
        weight: :math:`\lambda`.
    """

    create_graph = True

    def __init__(self, weight: float = 0.01) -> None:
        if weight < 0:
            raise ValueError(f'GradPenalty weight must be >= 0, got {weight}')
        self.weight = float(weight)

    def extra_repr(self) -> str:
        return f'weight={self.weight}'

    def penalty(self, grads: Tensor) -> Tensor:
        """:math:`\\lambda \\lVert \\sum_i G_i \\rVert^2` (differentiable when ``grads`` carry a graph)."""
        return self.weight * sum_tasks(grads).pow(2).sum()


@register_method
class Compose(Method):
    r"""A loss weighting followed by a gradient combiner, e.g. GradNorm + GradDrop or MGDA + GradDrop (appendix
    Table 6): the weighting method computes :math:`w` from the per-task gradients and losses, then ``then`` combines
    the weighted gradients :math:`w_i G_i`. The heads receive :math:`\nabla \sum_i w_i L_i`.

    Config: ``dict(type='Compose', weighting=dict(type='GradNorm'), then=dict(type='GradDrop'))``.

    :meth:`set_reducer`, :attr:`collect_stats`, :attr:`create_graph` and :meth:`penalty` reach both parts.
    """

    def __init__(self, weighting: Method | Mapping[str, Any], then: Method | Mapping[str, Any]) -> None:
        self.weighting = build_method(weighting)
        self.then = build_method(then)

    def extra_repr(self) -> str:
        return f'weighting={self.weighting!r}, then={self.then!r}'

    @property
    def collect_stats(self) -> bool:
        return self.weighting.collect_stats or self.then.collect_stats

    @collect_stats.setter
    def collect_stats(self, value: bool) -> None:
        self.weighting.collect_stats = value
        self.then.collect_stats = value

    def set_reducer(self, reducer) -> None:
        super().set_reducer(reducer)
        self.weighting.set_reducer(reducer)
        self.then.set_reducer(reducer)

    @property
    def create_graph(self) -> bool:
        return self.weighting.create_graph or self.then.create_graph

    def penalty(self, total_grad: Tensor) -> Tensor:
        """The sum of the penalties of the parts that set :attr:`create_graph`."""
        parts = [m.penalty(total_grad) for m in (self.weighting, self.then) if m.create_graph]
        if not parts:
            return super().penalty(total_grad)
        return sum(parts[1:], parts[0])

    def parameters(self) -> list[Tensor]:
        """Both parts' trainable parameters (``Compose(IMTLL, IMTLG)`` trains IMTL-L's scales, LibMTL's IMTL)."""
        return [*self.weighting.parameters(), *self.then.parameters()]

    def loss_term(self) -> Tensor | None:
        """The sum of the parts' loss terms (``None`` when neither has one)."""
        terms = [t for t in (self.weighting.loss_term(), self.then.loss_term()) if t is not None]
        return sum(terms[1:], terms[0]) if terms else None

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        kwargs = dict(activation=activation, losses=losses, generator=generator, problem_dims=problem_dims)
        weights = self.weighting.weigh(grads, **kwargs)     # the weights only, no weighted sum to throw away
        if weights is None:
            raise ValueError(f'{type(self.weighting).__name__} sets no task_weights, so it cannot be the weighting '
                             'of a Compose')
        out = self.then.combine(grads * weights_view(weights, grads, problem_dims), **kwargs)
        self._set_weights(weights)
        return out

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        kwargs = dict(activation=activation, losses=losses, generator=generator)
        weights = self.weighting.weigh_blocks(blocks, **kwargs)
        if weights is None:
            raise ValueError(f'{type(self.weighting).__name__} sets no task_weights, so it cannot be the weighting '
                             'of a Compose')
        out = self.then.combine_blocks(blocks.scaled(weights), **kwargs)
        self._set_weights(weights)
        return out

    def _set_weights(self, weights: Tensor) -> None:
        if self.then.task_weights is not None:
            weights = weights * self.then.task_weights
        self.task_weights = weights

    def last_stats(self) -> dict[str, float]:
        return {**self.weighting.last_stats(), **self.then.last_stats()}

    def state_dict(self) -> dict[str, Any]:
        return {'weighting': self.weighting.state_dict(), 'then': self.then.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        unknown = set(state) - {'weighting', 'then'}
        if unknown:
            raise KeyError(f'Compose state has unknown keys {sorted(unknown)}; expected [\'weighting\', \'then\']')
        self.weighting.load_state_dict(state.get('weighting', {}))
        self.then.load_state_dict(state.get('then', {}))
