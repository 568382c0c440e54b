"""The random stream a multitask method draws from (GradDrop's uniforms, RandomGradDrop's coins, PCGrad's orders).

The stream is counter-based: the generator of a step is seeded from ``(seed, rank, step)`` (and the problem id with
``problem_rng``), not carried from step to step. So

* every rank draws its own numbers (the rank is part of the key), while the seed itself is the same on all ranks;
* there is no generator state to save: a checkpoint holds ``seed`` and the step count, and a resumed N-process run
  draws on every rank exactly what the uninterrupted run draws (rank 0's checkpoint serves all ranks);
* a problem's draws depend only on its id, not on which other problems run beside it.

The key is mixed into a 64-bit seed by SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014), whose outputs for consecutive keys are statistically independent seeds.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stream_seed(*key: int) -> int:
    """A 64-bit generator seed from a tuple of integers (each taken modulo 2**64)."""
    h = 0
    for k in key:
        h = _splitmix64(h ^ (int(k) & _MASK64))
    return h


class StepStreams:
    """One generator (or one per problem) per step, seeded from ``(seed, rank, step[, problem id])``.

    Args:
        rank: this process's rank.
        problem_rng: one generator per problem (the leading ``problem_dims`` dims of the activation).
        problem_ids: the problems' ids (default ``0..P-1``).
    """

    def __init__(self, rank: int = 0, problem_rng: bool = False,
                 problem_ids: Sequence[int] | None = None) -> None:
        self.rank = int(rank)
        self.problem_rng = problem_rng
        self.problem_ids = list(problem_ids) if problem_ids is not None else None
        self._generators: dict[tuple[str, int], torch.Generator] = {}

    def _generator(self, device: torch.device, slot: int, seed: int) -> torch.Generator:
        key = (str(device), slot)
        gen = self._generators.get(key)
        if gen is None:
            gen = self._generators[key] = torch.Generator(device=device)
        gen.manual_seed(seed)
        return gen

    def for_step(self, seed: int, step: int, activation: Tensor,
                 problem_dims: int = 0) -> torch.Generator | list[torch.Generator]:
        """The generator(s) of ``step`` on ``activation``'s device, freshly seeded from ``(seed, rank, step)`` (and
        the problem id); ``seed`` is the run's seed, the same on every rank."""
        device = activation.device
        if not self.problem_rng:
            return self._generator(device, -1, stream_seed(seed, self.rank, step))
        n_problems = int(torch.Size(activation.shape[:problem_dims]).numel())
        ids = self.problem_ids if self.problem_ids is not None else list(range(n_problems))
        if len(ids) != n_problems:
            raise ValueError(f'problem_ids has {len(ids)} ids but the activation holds {n_problems} problems')
        return [self._generator(device, j, stream_seed(seed, self.rank, step, i)) for j, i in enumerate(ids)]
