r"""GradDrop's rule in one pass over a CPU float32 task stack, compiled with numba.

:class:`~graddrop_mtl.methods.graddrop.GradDrop` without leaks (and outside the batch-separated variant) needs, per
element, the sum :math:`S` and absolute sum :math:`A` of the T task gradients; the result is the positive mass
:math:`(S + A)/2` where the positive sign survives and the negative mass :math:`(S - A)/2` where the negative one
does. Its logged statistics need, per task, how many elements have the surviving sign and how many are non-zero.
In PyTorch that is one pass over the ``[T, N]`` stack for the sums, about a dozen ops over ``[N]`` for the
decisions, and a second pass over the stack for the counts (:func:`~graddrop_mtl.methods.graddrop.sign_counts`).
Here each block of :data:`BLOCK` columns is read from memory once: its sums, decisions, result and counts are made
while it is in cache.

Values are the PyTorch path's for the same uniforms: the task sums add the rows in task order (as
:func:`~graddrop_mtl.methods.base.sum_tasks` does for small tensors), and :math:`\mathcal{P}`, :math:`f(\mathcal{P})`
and the masses use the same float32 operations in the same order (no fast-math contraction). The counts are exact;
the summed :math:`|\mathcal{P} - 1/2|` is added per block in float64 (a logged mean). Blocks are split between
``torch.get_num_threads()`` threads in fixed contiguous ranges, so results do not depend on the thread count.

GradDrop's ``combine`` with statistics, compiled / PyTorch path (``OMP_NUM_THREADS=1 python
tools/analysis/benchmark_combine.py --graddrop-paths --shapes celeba celeba-218x178 pointpillars --repeats 5``, one
thread, best of 5): CelebA's ``[40, 8, 512, 8, 8]`` 13.0 against 25.3 ms; the stored-size ``[40, 8, 512, 27, 22]``
104 against 224 ms; PointPillars' ``[9, 2, 384, 160, 160]`` 258 against 871 ms (two threads, CelebA: 8.3 against
16.1 ms).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch import Tensor

#: Columns per block: a ``[40, 256]`` float32 block (40 KB) stays in a core's L1/L2 cache between its two reads.
BLOCK = 256

_kernel: Any = None       # the compiled kernel; False when numba is not importable
_pool: ThreadPoolExecutor | None = None
_pool_threads = 0


def _forget_pool() -> None:
    """In a forked child the parent's pool threads do not exist: start a new pool there when one is needed."""
    global _pool, _pool_threads
    _pool, _pool_threads = None, 0


os.register_at_fork(after_in_child=_forget_pool)


def _compile() -> Any:
    try:
        import numba
    except ImportError:     # numba is a requirement; without it GradDrop keeps its PyTorch path
        return False

    @numba.njit(nogil=True, cache=True, error_model='numpy')
    def kernel(g, u, coins, use_coin, k, eps, tiny, stats, out, kept, nonzero, purity, conflicts, b0, b1, block):
        n_tasks, n = g.shape
        half, one, zero = np.float32(0.5), np.float32(1.0), np.float32(0.0)
        total = np.empty(block, np.float32)
        mass = np.empty(block, np.float32)
        prob = np.empty(block, np.float32)
        survivor = np.empty(block, np.float32)
        for b in range(b0, b1):
            s0 = b * block
            w = min(n, s0 + block) - s0
            for j in range(w):
                x = g[0, s0 + j]
                total[j] = x
                mass[j] = abs(x)
            for t in range(1, n_tasks):
                for j in range(w):
                    x = g[t, s0 + j]
                    total[j] += x
                    mass[j] += abs(x)
            n_conflicts = 0
            for j in range(w):
                denom = mass[j] + eps if eps > zero else max(mass[j], tiny)
                prob[j] = half * (one + total[j] / denom)
                # both signs present: positive mass > 0 and negative mass < 0
                n_conflicts += np.int64((half * (total[j] + mass[j]) > zero) & (half * (total[j] - mass[j]) < zero))
            pur = 0.0
            for j in range(w):
                pur += abs(prob[j] - half)
            purity[b] = pur
            conflicts[b] = n_conflicts
            if use_coin:
                for j in range(w):
                    survivor[j] = one if coins[s0 + j] else -one
            elif k == one:
                for j in range(w):
                    survivor[j] = np.float32(prob[j] > u[s0 + j]) - np.float32(prob[j] < u[s0 + j])
            else:
                for j in range(w):
                    f = min(max(k * (prob[j] - half) + half, zero), one)
                    survivor[j] = np.float32(f > u[s0 + j]) - np.float32(f < u[s0 + j])
            for j in range(w):
                s = survivor[j]
                # neither sign survives: 0, or NaN for a non-finite element (as the PyTorch path: total - total)
                out[s0 + j] = half * (total[j] + mass[j]) if s > zero else (
                    half * (total[j] - mass[j]) if s < zero else total[j] - total[j])
            if stats:
                for t in range(n_tasks):
                    agree = np.int32(0)
                    nz = np.int32(0)
                    for j in range(w):
                        x = g[t, s0 + j]
                        agree += np.int32(x * survivor[j] > zero)
                        nz += np.int32(x != zero)
                    kept[b, t] = agree
                    nonzero[b, t] = nz

    return kernel


def available(flat: Tensor) -> bool:
    """Whether :func:`graddrop_pass` runs ``flat``: a CPU float32 tensor, with numba importable (compiled, or loaded
    from numba's cache, on the first call)."""
    global _kernel
    if flat.device.type != 'cpu' or flat.dtype != torch.float32:
        return False
    if _kernel is None:
        _kernel = _compile()
    return _kernel is not False


def _executor(threads: int) -> ThreadPoolExecutor:
    global _pool, _pool_threads
    if _pool is None or _pool_threads != threads:
        if _pool is not None:
            _pool.shutdown(wait=False)
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix='graddrop')
        _pool_threads = threads
    return _pool


def graddrop_pass(flat: Tensor, draw: Tensor, *, fair_coin: bool, k: float, eps: float,
                  stats: bool) -> tuple[Tensor, dict[str, Tensor] | None]:
    """GradDrop without leaks on ``flat`` ``[T, N]`` (CPU float32, T >= 1) with ``draw`` ``[N]``: the uniforms
    (``fair_coin=False``; the positive sign survives where :math:`f(\\mathcal{P}) > U`, the negative where
    :math:`f(\\mathcal{P}) < U`, :math:`f(P) = \\mathrm{clip}(k (P - 1/2) + 1/2, 0, 1)`) or the coins (bool, True keeps
    the positive sign). Returns the ``[N]`` result and, with ``stats``, the sums GradDrop's statistics are made of
    (as ``GradDrop._drop`` returns them)."""
    if not available(flat):
        raise RuntimeError('graddrop_pass needs a CPU float32 stack and numba')
    g = flat.detach().contiguous().numpy()
    n_tasks, n = g.shape
    n_blocks = (n + BLOCK - 1) // BLOCK
    out = torch.empty(n, dtype=flat.dtype)
    kept = np.zeros((n_blocks, n_tasks), np.int64)
    nonzero = np.zeros((n_blocks, n_tasks), np.int64)
    purity = np.zeros(n_blocks, np.float64)
    conflicts = np.zeros(n_blocks, np.int64)
    if fair_coin:
        coins, u = draw.reshape(-1).contiguous().numpy(), np.zeros(1, np.float32)
    else:
        coins, u = np.zeros(1, np.bool_), draw.reshape(-1).to(flat.dtype).contiguous().numpy()
    args = (g, u, coins, fair_coin, np.float32(k), np.float32(eps), np.float32(torch.finfo(flat.dtype).tiny),
            stats, out.numpy(), kept, nonzero, purity, conflicts)
    threads = max(1, min(torch.get_num_threads(), n_blocks))
    if threads == 1:
        _kernel(*args, 0, n_blocks, BLOCK)
    else:
        bounds = [n_blocks * i // threads for i in range(threads + 1)]
        futures = [_executor(threads).submit(_kernel, *args, lo, hi, BLOCK) for lo, hi in zip(bounds, bounds[1:])]
        for future in futures:
            future.result()
    if not stats:
        return out, None
    return out, dict(purity=torch.tensor(purity.sum(), dtype=torch.float64),
                     conflicts=torch.tensor(float(conflicts.sum()), dtype=torch.float64),
                     kept=torch.from_numpy(kept.sum(0)), nonzero=torch.from_numpy(nonzero.sum(0)))
