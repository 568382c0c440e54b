"""Independent reference implementations used by the method tests (numpy, float64, written from the papers)."""
from __future__ import annotations

import itertools

import numpy as np
import torch


def gen(seed: int) -> torch.Generator:
    """A fresh CPU generator: the same seed gives the same draws."""
    return torch.Generator().manual_seed(seed)


#: the degenerate gradient stacks every Gram method's tests run (``degenerate_grads(case)``).
DEGENERATE_CASES = ['zero', 'one_task', 'parallel', 'opposite', 'nan', 'float32_large']


def degenerate_grads(case: str) -> torch.Tensor:
    """A ``[T, n]`` stack: all zero, one task, parallel, opposite, with a NaN, or float32 near its range's top."""
    return {'zero': lambda: torch.zeros(3, 6), 'one_task': lambda: torch.randn(1, 6, generator=gen(0)),
            'parallel': lambda: torch.tensor([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]),
            'opposite': lambda: torch.tensor([[1.0, 2.0], [-1.0, -2.0]]),
            'nan': lambda: torch.tensor([[float('nan'), 1.0], [1.0, 1.0]]),
            'float32_large': lambda: torch.randn(3, 20_000, generator=gen(1)) * 1e18}[case]()


def assert_degenerate_output(out: torch.Tensor, g: torch.Tensor, case: str) -> None:
    """A method's result on ``degenerate_grads(case)``: the activation's shape and dtype, finite unless the input
    has a NaN (then not finite), and zero for zero gradients."""
    assert out.shape == g.shape[1:] and out.dtype == g.dtype
    if case == 'nan':
        assert not bool(torch.isfinite(out).all())
    else:
        assert bool(torch.isfinite(out).all()), out
    if case == 'zero':
        assert bool((out == 0).all())


def project_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of one vector onto the probability simplex (Duchi et al. 2008, sort based)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u)
    rho = max(j for j in range(len(v)) if u[j] - (css[j] - 1.0) / (j + 1) > 0)
    theta = (css[rho] - 1.0) / (rho + 1)
    return np.maximum(v - theta, 0.0)


def kkt_residual(gram: np.ndarray, alpha: np.ndarray) -> float:
    """``max |alpha - proj(alpha - M alpha)|`` with M scaled to unit mean diagonal (zero at the minimiser)."""
    m = gram / max(np.mean(np.diag(gram)), 1e-300)
    return float(np.max(np.abs(alpha - project_simplex(alpha - m @ alpha))))


def min_norm_by_support_enumeration(gram: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact minimiser of ``a^T M a`` over the simplex by trying every support (small T only).

    For a support S the KKT conditions are ``M_SS a_S = lam 1``, ``sum a_S = 1``, ``a_S >= 0`` and
    ``(M a)_j >= lam`` outside S; among the supports that satisfy them the smallest objective wins.
    """
    t = gram.shape[0]
    best, best_obj = None, np.inf
    scale = max(np.abs(gram).max(), 1e-300)
    for size in range(1, t + 1):
        for support in itertools.combinations(range(t), size):
            s = list(support)
            system = np.zeros((size + 1, size + 1))
            system[:size, :size] = gram[np.ix_(s, s)]
            system[:size, size] = -1.0
            system[size, :size] = 1.0
            rhs = np.zeros(size + 1)
            rhs[size] = 1.0
            sol, *_ = np.linalg.lstsq(system, rhs, rcond=None)
            if np.abs(system @ sol - rhs).max() > 1e-9 * max(scale, 1.0):
                continue
            a = np.zeros(t)
            a[s] = sol[:size]
            if a.min() < -1e-12:
                continue
            lam = sol[size]
            if ((gram @ a)[[j for j in range(t) if j not in s]] < lam - 1e-9 * scale).any():
                continue
            obj = float(a @ gram @ a)
            if obj < best_obj - 1e-15 * scale:
                best, best_obj = a, obj
    assert best is not None
    return best, best_obj


def pcgrad_reference(g: np.ndarray, others_order: list[list[int]], outer_order: list[int],
                     iterative: bool) -> np.ndarray:
    """Yu et al.'s PCGrad on the D-dimensional vectors ``g [T, D]`` with given random orders (float64 loops).

    Plain PCGrad projects a copy of ``g_i`` on the normal plane of every ORIGINAL conflicting ``g_j``; the iterative
    variant (the paper's appendix A.3) updates the gradients in place, in the task order ``outer_order``.
    """
    g = np.asarray(g, dtype=np.float64)
    if not iterative:
        out = g.copy()
        for i in range(len(g)):
            for j in others_order[i]:
                dot = out[i] @ g[j]
                if dot < 0:
                    out[i] = out[i] - dot / (g[j] @ g[j]) * g[j]
        return out.sum(0)
    cur = g.copy()
    for i in outer_order:
        for j in others_order[i]:
            dot, sq = cur[i] @ cur[j], cur[j] @ cur[j]
            if dot < 0 and sq > 0:
                cur[i] = cur[i] - dot / sq * cur[j]
    return cur.sum(0)


def pcgrad_orders(seed: int, n_tasks: int, iterative: bool) -> tuple[list[list[int]], list[int]]:
    """The random orders PCGrad draws from ``torch.Generator().manual_seed(seed)`` for one problem.

    Mirrors the documented draw of :func:`graddrop_mtl.methods.pcgrad_coefficients`: one uniform [T, T] matrix whose
    row i, with the diagonal sorted last, orders task i's other tasks; for the iterative variant a second uniform [T]
    vector orders the tasks.
    """
    g = gen(seed)
    others = torch.rand((1, n_tasks, n_tasks), generator=g, dtype=torch.float32)
    others.diagonal(dim1=1, dim2=2).fill_(2.0)
    order = others.argsort(-1)[0, :, :-1].tolist()
    outer = torch.rand((1, n_tasks), generator=g, dtype=torch.float32).argsort(-1)[0].tolist() if iterative \
        else list(range(n_tasks))
    return order, outer


# -- shared property checks --------------------------------------------------------------------------------------
#: Scales the property checks multiply the gradients by: zero, the tiny values where float32 products underflow
#: (squares below 1e-38), the ordinary range, and the large values where they overflow (squares above 3e38).
SCALES = (0.0, 1e-30, 1e-22, 1e-15, 1.0, 1e15, 1e18, 1e20)


def check_scaled_inputs(make, grads: torch.Tensor, *, seed: int = 0, scales=SCALES, rtol: float = 1e-5,
                        **kwargs) -> None:
    """A positively homogeneous method (``combine(c g) = c combine(g)`` for ``c >= 0``: Sum, GradDrop, PCGrad, MGDA
    with 'none' or 'l2', ...) gives, on ``c * grads``, ``c`` times its result on ``grads``, to ``rtol`` of the
    largest element, with the same random draws (``gen(seed)``), and task weights that do not depend on ``c``
    (``c > 0``). ``make()`` builds a fresh method; ``kwargs`` go to ``combine``."""
    ref_method = make()
    ref = ref_method.combine(grads, generator=gen(seed), **kwargs).double()
    ref_weights = ref_method.task_weights
    for c in scales:
        method = make()
        out = method.combine(grads * c, generator=gen(seed), **kwargs)
        assert out.shape == ref.shape and out.dtype == grads.dtype, c
        assert bool(torch.isfinite(out).all()), f'{method!r}: non-finite result at scale {c:g}'
        if c == 0:
            assert bool((out == 0).all()), f'{method!r}: non-zero result for zero gradients'
            continue
        err = float((out.double() / c - ref).abs().max())
        assert err <= rtol * max(float(ref.abs().max()), 1e-300), f'{method!r} at scale {c:g}: error {err:.3g}'
        if ref_weights is not None:
            torch.testing.assert_close(method.task_weights.double(), ref_weights.double(), rtol=rtol, atol=rtol,
                                       msg=f'{method!r}: task weights change at scale {c:g}')


class ThreadAllReduce:
    """A fake all-reduce for methods run by several threads, one per simulated rank: ``reducer(rank)`` returns the
    function that rank's method uses; every call blocks until each rank has made its call, then returns the sum of
    their tensors added in rank order (the same tensor on every rank)."""

    def __init__(self, world_size: int) -> None:
        import threading
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size, timeout=60)
        self.slots: list[torch.Tensor | None] = [None] * world_size
        self.calls = 0

    def reducer(self, rank: int):
        def reduce(t: torch.Tensor) -> torch.Tensor:
            self.slots[rank] = t.clone()
            self.barrier.wait()
            total = self.slots[0].clone()
            for other in self.slots[1:]:
                total += other
            if rank == 0:
                self.calls += 1
            self.barrier.wait()
            return total
        return reduce


def run_ranks(world_size: int, fn) -> list:
    """``fn(rank)`` in one thread per rank; the results in rank order (an exception in a rank is raised)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(world_size) as pool:
        futures = [pool.submit(fn, r) for r in range(world_size)]
        return [f.result() for f in futures]
