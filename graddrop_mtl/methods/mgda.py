"""MGDA-UB (Sener & Koltun, 2018): the min-norm point of the convex hull of the task gradients."""
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
    reduce_statistics,
    register_method,
)
from .blocks import TaskBlocks

NORMALIZATIONS = ('none', 'l2', 'loss', 'loss+')


@register_method
class MGDA(Method):
    r"""Multiple-gradient descent on the shared representation (MGDA-UB).

    Solves :math:`\alpha^* = \arg\min_{\alpha \in \Delta^{T-1}} \lVert \sum_i \alpha_i \hat g_i \rVert_2^2` over the
    simplex, where :math:`\hat g_i = g_i / n_i` are the flattened representation gradients (batch included) scaled
    by the normalisation :math:`n_i`: ``'none'`` 1, ``'l2'`` :math:`\lVert g_i \rVert`, ``'loss'`` :math:`L_i`,
    ``'loss+'`` :math:`L_i \lVert g_i \rVert`. As in the authors' code, the weights are then applied to the
    *unnormalised* task losses: the trunk receives :math:`\sum_i \alpha_i g_i` and the heads
    :math:`\nabla \sum_i \alpha_i L_i` (:attr:`task_weights` = :math:`\alpha`).

    The quadratic program is solved on the :math:`T \times T` Gram matrix (accumulated in float64): in closed form
    for :math:`T = 2` and for one-dimensional gradients; for more tasks by primal-dual active-set Newton steps
    (a few linear solves, exact when they settle), falling back to Wolfe's minimum-norm-point algorithm (an exact
    active-set method that always terminates) when they do not; checked by the KKT residual
    :math:`\lVert \alpha - \Pi_\Delta(\alpha - M\alpha) \rVert_\infty` (Gram matrix scaled to unit mean diagonal),
    reported as ``kkt_residual`` in :meth:`last_stats`.
    The paper's appendix needed a 100x lower learning rate for MGDA on CelebA.

    Ties: tasks whose scaled gradients :math:`\hat g_i` coincide (e.g. parallel gradients under ``'l2'``) are one
    point of the hull; they are solved as one task and share its weight equally, so that the weights do not depend
    on the order of the tasks (permuting the tasks permutes :math:`\alpha`).

    Several processes (:meth:`~graddrop_mtl.methods.Method.set_reducer`): the Gram matrix is summed over the ranks
    (the Gram matrix of the concatenated gradients) and the losses averaged before the normalisation and the
    solve, so every rank uses the same :math:`\alpha`.

    Inputs that require grad are accepted: :math:`\alpha` is computed from their values (a constant), the result
    :math:`\sum_i \alpha_i g_i` keeps the graph of the :math:`g_i`.
    """

    def __init__(self, normalization: str = 'none', tol: float = 1e-6, max_iter: int = 2000) -> None:
        if normalization not in NORMALIZATIONS:
            raise ValueError(f'MGDA normalization must be one of {NORMALIZATIONS}, got {normalization!r}')
        self.normalization = normalization
        self.tol = tol
        self.max_iter = max_iter
        self._stats: dict[str, float] = {}

    def extra_repr(self) -> str:
        return f'normalization={self.normalization!r}'

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        flat, alpha = self._flat_and_alpha(grads, losses, problem_dims)
        return combine_with_coefficients(flat, alpha, grads)

    def weigh(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
              generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        self._flat_and_alpha(grads, losses, problem_dims)
        return self.task_weights

    def _flat_and_alpha(self, grads: Tensor, losses: Tensor | None, problem_dims: int) -> tuple[Tensor, Tensor]:
        """The flattened gradients ``[P, T, D]`` and the min-norm weights ``[P, T]`` (set as :attr:`task_weights`)."""
        check_grads(grads, problem_dims)
        _, gram = gram_matrix(grads.detach(), problem_dims)     # [P, T, T]
        flat = flat_per_problem(grads, problem_dims)            # [P, T, D]
        scalar = flat.detach()[..., 0] if flat.shape[-1] == 1 and self.reducer is None else None
        alpha = self._alpha(gram, losses, scalar)
        self.task_weights = alpha.t().reshape(grads.shape[:1 + problem_dims]).to(grads.dtype)
        return flat, alpha

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        return blocks.linear_combination(self._block_alpha(blocks, losses))

    def weigh_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                     generator: torch.Generator | None = None) -> Tensor:
        self._block_alpha(blocks, losses)
        return self.task_weights

    def _block_alpha(self, blocks: TaskBlocks, losses: Tensor | None) -> Tensor:
        """The min-norm weights ``[T]`` (float64) of the blocks' Gram matrix, set as :attr:`task_weights`."""
        alpha = self._alpha(blocks.gram()[None], losses, None)[0]
        self.task_weights = alpha.to(blocks.dtype)
        return alpha

    def _alpha(self, gram: Tensor, losses: Tensor | None, scalar_grads: Tensor | None) -> Tensor:
        """Min-norm weights ``[P, T]`` from the Gram matrices ``[P, T, T]`` (``scalar_grads [P, T]``: the
        gradients themselves when they are one-dimensional, solved in closed form). With a reducer, the Gram
        matrices are summed and the losses averaged over the processes first."""
        if self.reducer is not None:
            uses_losses = self.normalization in ('loss', 'loss+') and losses is not None
            (gram,), means = reduce_statistics(self.reducer, [gram], [losses.detach()] if uses_losses else [])
            losses = means[0] if uses_losses else losses
        scale = self._normalizers(gram, losses, gram.shape[1])   # [P, T]
        norm_gram = gram / (scale[:, :, None] * scale[:, None, :])
        if scalar_grads is not None:
            alpha = _min_norm_1d(scalar_grads.double() / scale)
            diag_mean = norm_gram.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-300)
            residual = kkt_residual(norm_gram / diag_mean[:, None, None], alpha)
        else:
            alpha, residual = min_norm_simplex(norm_gram, tol=self.tol, max_iter=self.max_iter)
        self._stats = {'kkt_residual': residual.max().item()}
        return alpha

    def _normalizers(self, gram: Tensor, losses: Tensor | None, n_tasks: int) -> Tensor:
        norms = gram.diagonal(dim1=1, dim2=2).clamp_min(0).sqrt()
        if self.normalization == 'none':
            scale = torch.ones_like(norms)
        elif self.normalization == 'l2':
            scale = norms
        else:
            if losses is None:
                raise ValueError(f"MGDA normalization {self.normalization!r} needs the task losses (losses=...)")
            loss = losses.detach().reshape(n_tasks, -1).t().to(gram.dtype)
            scale = loss if self.normalization == 'loss' else loss * norms
        return torch.where(scale > 0, scale, torch.ones_like(scale))


def _min_norm_1d(g: Tensor) -> Tensor:
    """Closed form for scalar gradients ``g`` [P, T]: zero is in the hull when signs differ (mix the largest
    positive and the most negative gradient to cancel), otherwise the vertex of smallest magnitude. Tied tasks
    (several holding the largest, the most negative or the smallest value) share the weight equally."""
    gp, gn = g.amax(-1, keepdim=True), g.amin(-1, keepdim=True)
    mixed = (gp > 0) & (gn < 0)
    w_pos = torch.where(mixed, -gn / (gp - gn).clamp_min(1e-300), torch.zeros_like(gp))
    at_pos, at_neg = (g == gp).to(g.dtype), (g == gn).to(g.dtype)
    at_min = (g.abs() == g.abs().amin(-1, keepdim=True)).to(g.dtype)
    return torch.where(mixed, w_pos * at_pos / at_pos.sum(-1, keepdim=True)
                       + (1 - w_pos) * at_neg / at_neg.sum(-1, keepdim=True),
                       at_min / at_min.sum(-1, keepdim=True))


def _project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row of ``v`` [P, T] onto the probability simplex."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - 1.0
    idx = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    cond = (u - css / idx) > 0
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)  # last index where cond holds
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0.0)


def _simplex_rows(rows: Tensor | None, problem: int, t: int, name: str) -> Tensor:
    """Per-problem task weights ``rows`` [P, T] (float64), grown with uniform rows so that row ``problem`` exists;
    for the stateful simplex iterations (MoDo, SDMGrad). Rows kept for another number of tasks are an error naming
    the method ``name``."""
    if rows is not None and rows.shape[1] != t:
        raise ValueError(f'{name} was set up for {rows.shape[1]} tasks, got {t}')
    if rows is None or rows.shape[0] <= problem:
        have = 0 if rows is None else rows.shape[0]
        fresh = torch.full((problem + 1 - have, t), 1.0 / t, dtype=torch.float64)
        rows = fresh if rows is None else torch.cat([rows.cpu(), fresh])
    return rows


def kkt_residual(gram: Tensor, alpha: Tensor) -> Tensor:
    """``max |alpha - proj(alpha - M alpha)|`` per problem: zero exactly at the minimiser."""
    grad = torch.bmm(gram, alpha.unsqueeze(-1)).squeeze(-1)
    return (alpha - _project_simplex(alpha - grad)).abs().amax(-1)


def min_norm_simplex(gram: Tensor, tol: float = 1e-6, max_iter: int = 2000) -> tuple[Tensor, Tensor]:
    """Minimise ``a^T M a`` over the simplex for each Gram matrix ``M`` in ``gram`` [P, T, T].

    Returns ``(alpha [P, T], kkt_residual [P])``; the residual is measured on M scaled to unit mean diagonal.
    """
    gram = gram.double()
    n_prob, t, _ = gram.shape
    if t == 1:
        ones = torch.ones(n_prob, 1, dtype=gram.dtype, device=gram.device)
        return ones, torch.zeros(n_prob, dtype=gram.dtype, device=gram.device)
    diag_mean = gram.diagonal(dim1=1, dim2=2).mean(-1)
    m = gram / torch.where(diag_mean > 0, diag_mean, torch.ones_like(diag_mean))[:, None, None]
    diag = m.diagonal(dim1=1, dim2=2)
    same = (diag[:, :, None] + diag[:, None, :] - 2 * m) <= DUPLICATE_TOL * (diag[:, :, None] + diag[:, None, :])
    has_duplicates = same.sum((1, 2)) > t                           # more than the diagonal
    if bool(has_duplicates.any()):
        alpha = torch.stack([_merged_min_norm(m[p], tol, max_iter) if has_duplicates[p] else
                             min_norm_simplex(m[p:p + 1], tol, max_iter)[0][0] for p in range(n_prob)])
        return alpha, kkt_residual(m, alpha)
    if t == 2:
        g11, g12, g22 = m[:, 0, 0], m[:, 0, 1], m[:, 1, 1]
        denom = g11 + g22 - 2 * g12
        a1 = torch.where(denom > 1e-300, (g22 - g12) / denom.clamp_min(1e-300), torch.full_like(denom, 0.5))
        a1 = a1.clamp(0.0, 1.0)
        alpha = torch.stack([a1, 1 - a1], -1)
        return alpha, kkt_residual(m, alpha)
    m_np = m.cpu().numpy()
    alpha = torch.from_numpy(np.stack([_min_norm_np(m_np[p], tol, max_iter) for p in range(n_prob)]))
    alpha = alpha.to(device=gram.device, dtype=gram.dtype)
    return alpha, kkt_residual(m, alpha)


#: Two tasks are one point of the hull when ``|g_i - g_j|^2 <= DUPLICATE_TOL * (|g_i|^2 + |g_j|^2)`` (equal up to
#: the rounding of float64 products); :func:`min_norm_simplex` then solves them as one and splits the weight.
DUPLICATE_TOL = 1e-10


def _merged_min_norm(m: Tensor, tol: float, max_iter: int) -> Tensor:
    """:func:`min_norm_simplex` for one Gram matrix ``m [T, T]`` with coinciding points: each group of coinciding
    tasks (connected by the duplicate test) is solved as its first task, and its weight split equally over the
    group. The groups do not depend on the order of the tasks, so neither do the weights."""
    t = m.shape[0]
    diag = m.diagonal()
    same = ((diag[:, None] + diag[None, :] - 2 * m) <= DUPLICATE_TOL * (diag[:, None] + diag[None, :])).cpu().numpy()
    group = list(range(t))
    for i in range(t):                      # connected components (labels: the smallest index of the group)
        for j in range(i + 1, t):
            if same[i, j]:
                a, b = group[i], group[j]
                lo, hi = min(a, b), max(a, b)
                group = [lo if x == hi else x for x in group]
    reps = sorted(set(group))
    sub, _ = min_norm_simplex(m[reps][:, reps][None], tol, max_iter)
    sizes = torch.tensor([group.count(r) for r in reps], dtype=m.dtype, device=m.device)
    share = sub[0] / sizes
    return share[torch.tensor([reps.index(x) for x in group], device=m.device)]


#: Newton steps :func:`_active_set_min_norm` may take before :func:`_min_norm_np` falls back to Wolfe's algorithm.
ACTIVE_SET_STEPS = 16


def _min_norm_np(gram: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    """The simplex min-norm weights for one Gram matrix: the active-set Newton iteration when it settles on a point
    that meets the KKT conditions (within ``tol * 1e-3``, the test Wolfe's algorithm stops on), else Wolfe's
    algorithm, which always terminates."""
    g = gram / max(float(np.max(np.abs(np.diag(gram)))), 1e-300)
    lam = _active_set_min_norm(g, ACTIVE_SET_STEPS)
    if lam is not None and _kkt_np(g, lam) <= tol * 1e-3:
        return lam
    return _wolfe_min_norm(g, tol, max_iter)   # already scaled: Wolfe's own scaling divides by exactly 1.0


def _active_set_min_norm(g: np.ndarray, max_steps: int) -> np.ndarray | None:
    r"""Primal-dual active-set (semismooth Newton) steps for :math:`\min_\lambda \lambda^T G \lambda` over the
    simplex; ``None`` if they do not settle within ``max_steps`` or meet a singular system.

    The KKT conditions are :math:`G\lambda - \nu 1 = \mu`, :math:`1^T\lambda = 1`, :math:`\lambda \ge 0`,
    :math:`\mu \ge 0`, :math:`\lambda_i \mu_i = 0`. Each step takes a free set :math:`F` (starting from all
    tasks), solves the equality-constrained problem on it (:math:`G_{FF}\lambda_F = \nu 1`,
    :math:`1^T\lambda_F = 1`, :math:`\lambda = 0` off :math:`F`), and moves to :math:`F' = \{i \in F:
    \lambda_i > 0\} \cup \{i \notin F: \mu_i < 0\}`. A step that leaves :math:`F` unchanged has
    :math:`\lambda_F > 0` and :math:`\mu \ge 0` off :math:`F`: the KKT point, exactly. One solve of a
    :math:`(|F| + 1)`-square system per step; when every task is in the solution (as for the 40 Gaussian
    gradients of ``tools/analysis/benchmark_combine.py``) the first step is the answer, where Wolfe's algorithm
    adds the tasks to its corral one at a time (T major cycles).
    """
    t = g.shape[0]
    free = np.ones(t, dtype=bool)
    for _ in range(max_steps):
        idx = np.flatnonzero(free)
        k = len(idx)
        system = np.zeros((k + 1, k + 1))
        system[:k, :k] = g[idx][:, idx]
        system[:k, k] = -1.0
        system[k, :k] = 1.0
        rhs = np.zeros(k + 1)
        rhs[k] = 1.0
        try:
            sol = np.linalg.solve(system, rhs)
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(sol)):
            return None
        lam = np.zeros(t)
        lam[idx] = sol[:k]
        mu = g @ lam - sol[k]
        new_free = np.where(free, lam > 0.0, mu < 0.0)
        if np.array_equal(new_free, free):
            return lam
        if not new_free.any():
            return None
        free = new_free
    return None


def _wolfe_min_norm(gram: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    """Wolfe's minimum-norm-point algorithm on the points' Gram matrix (exact active set, finite termination).

    Keeps a corral ``S`` of affinely independent points and the convex weights ``lam`` of the current point
    ``x = sum lam_i p_i``. Major cycle: add the point minimising ``<x, p_i> = (G lam)_i`` if it improves on
    ``|x|^2 = lam^T G lam``; minor cycle: move to the affine minimiser of the corral, stepping back to its convex hull
    and dropping points whose weight reaches zero. Stops when the simplex KKT residual is below ``tol``.
    """
    t = gram.shape[0]
    scale = max(float(np.max(np.abs(np.diag(gram)))), 1e-300)
    g = gram / scale
    lam = np.zeros(t)
    first = int(np.argmin(np.diag(g)))
    lam[first] = 1.0
    corral = [first]
    for _ in range(max_iter):
        gl = g @ lam
        norm_sq = float(lam @ gl)
        w = int(np.argmin(gl))
        gap = norm_sq - float(gl[w])   # how much the best vertex would lower |x|^2 (Wolfe's test)
        # The KKT residual check (a sort) is only an early exit: it runs once the gap is below tol, which skips
        # it where it cannot pass and costs at most extra iterations, never accuracy.
        if gap <= 1e-15 or w in corral or (gap <= tol and _kkt_np(g, lam) <= tol * 1e-3):
            break
        corral.append(w)
        for _ in range(max_iter):                     # minor cycles
            idx = np.array(corral)
            sub = g[idx][:, idx]
            k = len(idx)
            system = np.zeros((k + 1, k + 1))
            system[:k, :k] = sub
            system[:k, k] = -1.0
            system[k, :k] = 1.0
            rhs = np.zeros(k + 1)
            rhs[k] = 1.0
            try:
                mu = np.linalg.solve(system, rhs)[:k]     # non-singular while the corral is affinely independent
            except np.linalg.LinAlgError:
                mu = np.linalg.lstsq(system, rhs, rcond=None)[0][:k]
            if np.all(mu > 1e-14):
                lam[:] = 0.0
                lam[idx] = mu
                break
            cur = lam[idx]
            neg = mu <= 1e-14
            theta = np.min(cur[neg] / np.maximum(cur[neg] - mu[neg], 1e-300))
            theta = float(np.clip(theta, 0.0, 1.0))
            new = cur + theta * (mu - cur)
            new[new <= 1e-14] = 0.0
            lam[:] = 0.0
            lam[idx] = new
            corral = [i for i in corral if lam[i] > 0.0]
            if not corral:                              # numerical safety: restart from the best vertex
                corral = [first]
                lam[first] = 1.0
                break
    lam = np.clip(lam, 0.0, None)
    return lam / lam.sum()


def _kkt_np(g: np.ndarray, lam: np.ndarray) -> float:
    v = lam - g @ lam
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    idx = np.arange(1, len(v) + 1)
    rho = np.nonzero(u - css / idx > 0)[0][-1]
    return float(np.max(np.abs(lam - np.maximum(v - css[rho] / (rho + 1), 0.0))))
