"""Per-task gradients at the shared activation(s): the gradient ``dL_i/dA`` of every task loss at the detached copy
``A`` that the heads consumed, by one of the ``grad_mode`` s of :class:`~graddrop_mtl.engine.MultiTaskOptimWrapper`.

* ``'loop'``: one ``autograd.grad`` call per task;
* ``'batched'``: one ``autograd.grad`` call with ``is_grads_batched=True`` (vmap over the tasks);
* ``'linear'``: through the linear layers that consume ``A`` (:mod:`graddrop_mtl.engine.linear_heads`), sparse
  (:class:`~graddrop_mtl.methods.blocks.TaskBlocks`) when they are all pointwise;
* ``'auto'``: chosen on the first step among the modes that apply.
"""
from __future__ import annotations

import time

import torch
from mmengine.logging import print_log
from torch import Tensor

from ..methods.blocks import TaskBlocks
from .linear_heads import dense_task_grads, head_output_grads, task_blocks

GRAD_MODES = ('auto', 'loop', 'batched', 'linear')


class TaskGradients:
    """Computes the per-task gradients ``[T, *A.shape]`` (one stack per shared activation, or :class:`TaskBlocks`).

    Args:
        mode: one of :data:`GRAD_MODES`; ``'auto'`` is replaced by the chosen mode on the first call.
        linear_heads: whether linear head layers are configured (``'linear'`` is a candidate of ``'auto'``).
        problem_dims: leading dims of the activation that index independent problems (no sparse blocks then).
    """

    def __init__(self, mode: str = 'auto', linear_heads: bool = False, problem_dims: int = 0) -> None:
        if mode not in GRAD_MODES:
            raise ValueError(f'grad_mode must be one of {GRAD_MODES}, got {mode!r}')
        self.mode = mode
        self.linear_heads = bool(linear_heads)
        self.problem_dims = int(problem_dims)

    def __call__(self, task_losses: list[Tensor], acts: list[Tensor], head_calls: list) -> list[Tensor] | TaskBlocks:
        mode = self.mode
        if mode == 'auto':
            mode = self.choose(task_losses, acts, head_calls)
        return self.compute(mode, task_losses, acts, head_calls)

    def compute(self, mode: str, task_losses, acts, head_calls) -> list[Tensor] | TaskBlocks:
        if mode == 'batched':
            return self.batched(task_losses, acts)
        if mode == 'linear':
            return self.linear(task_losses, acts, head_calls)
        return self.loop(task_losses, acts)

    def linear(self, task_losses, acts, head_calls) -> list[Tensor] | TaskBlocks:
        if not head_calls:
            raise RuntimeError('linear_heads: none of the listed layers consumed the shared activation')
        grads_out = head_output_grads(task_losses, [out for _, _, out in head_calls])
        if len(acts) == 1 and not self.problem_dims:
            blocks = task_blocks(grads_out, acts[0], head_calls)
            if blocks is not None:
                return blocks
        return dense_task_grads(grads_out, acts, head_calls)

    @staticmethod
    def loop(task_losses, acts) -> list[Tensor]:
        per_task = [torch.autograd.grad(loss.sum(), acts, retain_graph=True, allow_unused=True,
                                        materialize_grads=True) for loss in task_losses]
        return [torch.stack([g[j] for g in per_task]) for j in range(len(acts))]

    @staticmethod
    def batched(task_losses, acts) -> list[Tensor]:
        stacked = torch.stack([loss.sum() for loss in task_losses])
        eye = torch.eye(len(task_losses), dtype=stacked.dtype, device=stacked.device)
        grads = torch.autograd.grad(stacked, acts, grad_outputs=eye, is_grads_batched=True, retain_graph=True,
                                    allow_unused=True, materialize_grads=True)
        # A batched backward can return a permuted layout (e.g. an einsum's); the methods and the norms read the
        # stack as [T, -1] several times, so it is made contiguous once here (a no-op when it already is).
        return [g.contiguous() for g in grads]

    def choose(self, task_losses, acts, head_calls) -> str:
        timings: dict[str, float] = {}
        notes: dict[str, str] = {}
        reference = None
        for mode in ['loop', 'batched'] + (['linear'] if self.linear_heads else []):
            # Each mode runs twice and the faster run counts: a first run also pays for memory the process has not
            # used yet (on a VM a page fault can cost ~10 us per 4 KiB page, over a second for a 390 MB stack of
            # per-task gradients), which would decide the choice by the order of the candidates.
            elapsed = float('inf')
            try:
                for _ in range(2):
                    start = time.perf_counter()
                    result = self.compute(mode, task_losses, acts, head_calls)
                    elapsed = min(elapsed, time.perf_counter() - start)
            except RuntimeError as err:   # e.g. vmap cannot batch some head operation
                notes[mode] = f'failed: {str(err).splitlines()[0][:120]}'
                continue
            if isinstance(result, TaskBlocks):
                result = [result.to_dense()]
            if reference is None:
                reference = result
            else:
                scale = max(1e-30, max(r.abs().max().item() for r in reference))
                if not all(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale) for a, b in zip(reference, result)):
                    notes[mode] = 'differs from the loop, not used'
                    continue
            timings[mode] = elapsed
        # 'linear' whenever it agrees with the loop: its sparse gradients make the methods draw their random numbers
        # differently from the dense modes, so a choice by timing alone would make runs with one seed differ.
        # Between the dense modes (identical results) the faster one.
        chosen = 'linear' if 'linear' in timings else min(timings, key=timings.get)
        report = ', '.join([f'{m} {t:.3f}s' for m, t in timings.items()] + [f'{m} {n}' for m, n in notes.items()])
        print_log(f'MultiTaskOptimWrapper: per-task gradients by {report}: using {chosen}', logger='current')
        self.mode = chosen
        return chosen
