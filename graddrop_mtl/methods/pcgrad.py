"""PCGrad (Yu et al., 2020) and the paper's Iterative PCGrad (appendix A.3)."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import (
    Method,
    check_grads,
    combine_with_coefficients,
    flat_per_problem,
    gram_matrix,
    register_method,
    uniform,
)
from .blocks import TaskBlocks


@register_method
class PCGrad(Method):
    r"""Projecting Conflicting Gradients on the flattened per-task gradients (batch included).

    For each task :math:`i`, in a random order over the other tasks :math:`j`: if :math:`g_i \cdot g_j < 0`,
    :math:`g_i \leftarrow g_i - \frac{g_i \cdot g_j}{\lVert g_j \rVert^2} g_j`, where :math:`g_j` is the ORIGINAL
    gradient (a static copy). The trunk receives :math:`\sum_i g_i`.

    ``iterative=True`` is the paper's Iterative PCGrad: no static copy, each projection uses the current,
    already-projected :math:`g_j`, and the tasks are processed in a random order. It is the only variant that does
    something in one dimension (there plain PCGrad zeroes every conflicting gradient).

    Every projected gradient stays a linear combination of the originals, so the whole procedure runs on the
    :math:`T \times T` Gram matrix and touches the D-dimensional gradients twice (Gram matrix, final sum).

    Zero-norm guard: the iterative variant skips a projection onto a projected gradient whose squared norm is below
    ``1e-12`` of the largest task's (rounding noise of a gradient that the projections cancelled). Plain PCGrad has
    no such guard: its :math:`\lVert g_j \rVert^2` is an original norm, however small, and the projection is
    made exactly as published (:math:`g_1 = (1, 0)`, :math:`g_2 = (-10^{-7}, 10^{-7})` give
    :math:`(0.5, 0.5000001)`).

    Under data parallelism PCGrad acts on each rank's own gradients with its own random orders (stateless, like
    GradDrop; see :class:`~graddrop_mtl.methods.Method`). Inputs that require grad are accepted: the projection
    coefficients come from their values, the result keeps their graph.
    """

    def __init__(self, iterative: bool = False) -> None:
        self.iterative = iterative
        self._stats: dict[str, float] = {}

    def extra_repr(self) -> str:
        return f'iterative={self.iterative}'

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        _, gram = gram_matrix(grads.detach(), problem_dims)
        return combine_with_coefficients(flat_per_problem(grads, problem_dims), self._coefficients(gram, generator),
                                         grads)

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        return blocks.linear_combination(self._coefficients(blocks.gram()[None], generator)[0])

    def _coefficients(self, gram: Tensor, generator) -> Tensor:
        """``c [P, T]``: the trunk gradient is ``sum_k c[p, k] g_k``."""
        coef = pcgrad_coefficients(gram, iterative=self.iterative, generator=generator)
        off = ~torch.eye(gram.shape[1], dtype=torch.bool, device=gram.device)
        self._stats = {'conflict_pairs_frac': (gram[:, off] < 0).double().mean().item()}
        return coef.sum(1)


def pcgrad_coefficients(gram: Tensor, *, iterative: bool = False,
                        generator: torch.Generator | None = None) -> Tensor:
    """Coefficients ``C [P, T, T]`` with projected ``g'_i = sum_k C[p, i, k] g_k`` for Gram matrices ``[P, T, T]``."""
    n_prob, n_tasks, _ = gram.shape
    coef = torch.eye(n_tasks, dtype=gram.dtype, device=gram.device).expand(n_prob, -1, -1).clone()
    if n_tasks < 2:
        return coef
    rows = torch.arange(n_prob, device=gram.device)
    # Iterative variant: a projected gradient whose squared norm is this small relative to the largest task's is
    # zero up to rounding: projecting onto it would divide rounding noise by rounding noise (in coefficient space
    # that blows up). Plain PCGrad projects onto original gradients only: any positive norm is a real one.
    if iterative:
        tiny = 1e-12 * gram.diagonal(dim1=1, dim2=2).amax(-1).clamp_min(1e-300)
    else:
        tiny = torch.zeros(n_prob, dtype=gram.dtype, device=gram.device)
    # A random order of the other tasks for every (problem, task); for the iterative variant also a random order
    # in which the tasks are processed.
    others = uniform((n_prob, n_tasks, n_tasks), generator, device=gram.device, dtype=torch.float32)
    others.diagonal(dim1=1, dim2=2).fill_(2.0)  # sort the task itself last, then drop it
    order_others = others.argsort(-1)[..., :-1]
    if iterative:
        outer = uniform((n_prob, n_tasks), generator, device=gram.device, dtype=torch.float32).argsort(-1)
    else:
        outer = torch.arange(n_tasks, device=gram.device).expand(n_prob, -1)
    if gram.device.type == 'cpu' and n_prob <= _NUMPY_MAX_PROBLEMS:
        # A few problems: the T (T - 1) sequential projections on T x T floats run far faster in NumPy than as
        # torch ops (each pays torch's per-op dispatch); many problems (the sine replicas): vectorised over them below.
        g, o, out, t = (x.cpu().numpy() for x in (gram.double(), order_others, outer, tiny))
        with np.errstate(invalid='ignore', over='ignore'):   # non-finite gradients give non-finite coefficients
            coef = np.stack([_project_np(g[p], o[p], out[p], float(t[p]), iterative) for p in range(n_prob)])
        return torch.from_numpy(coef).to(gram.dtype)
    for step in range(n_tasks):
        i = outer[:, step]
        for s in range(n_tasks - 1):
            j = order_others[rows, i, s]
            ci = coef[rows, i]                                   # [P, T]
            if iterative:
                cj = coef[rows, j]
                dot = torch.einsum('pk,pkl,pl->p', ci, gram, cj)
                sq = torch.einsum('pk,pkl,pl->p', cj, gram, cj)
                step_coef = torch.where((dot < 0) & (sq > tiny), dot / sq.clamp_min(1e-300), 0.0)
                coef[rows, i] = ci - step_coef[:, None] * cj
            else:
                dot = torch.einsum('pk,pk->p', ci, gram[rows, :, j])
                sq = gram[rows, j, j]
                step_coef = torch.where((dot < 0) & (sq > tiny), dot / sq.clamp_min(1e-300), 0.0)
                coef[rows, i, j] = coef[rows, i, j] - step_coef
    return coef


#: Up to this many problems the projections run in NumPy, one problem after the other.
_NUMPY_MAX_PROBLEMS = 8


def _project_np(gram: np.ndarray, order_others: np.ndarray, outer: np.ndarray, tiny: float,
                iterative: bool) -> np.ndarray:
    """:func:`pcgrad_coefficients` for one problem, in NumPy (the same projections in the same order)."""
    coef = np.eye(gram.shape[0])
    for i in outer:
        for j in order_others[i]:
            if iterative:
                ci, cj = coef[i], coef[j]
                g_cj = gram @ cj
                dot, sq = float(ci @ g_cj), float(cj @ g_cj)
                if dot < 0 and sq > tiny:
                    coef[i] = ci - (dot / sq) * cj
            else:
                dot, sq = float(coef[i] @ gram[:, j]), float(gram[j, j])
                if dot < 0 and sq > tiny:
                    coef[i, j] -= dot / sq
    return coef
