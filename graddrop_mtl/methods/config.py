"""ConFIG (Liu, Chu & Thuerey, ICLR 2025, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
Networks")."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import register_method
from .weighting import GramWeighting


@register_method
class ConFIG(GramWeighting):
    r"""Conflict-Free Inverse Gradients: the direction with the same cosine to every task gradient, scaled by the
    sum of the gradients' projections on it.

    With unit gradients :math:`u_i = g_i / \lVert g_i \rVert` (0 for a zero gradient), the direction is
    :math:`x = U^{+} p` (``p`` the preference weights, default ones: :math:`u_i \cdot x = 1` for all i when the
    system is solvable), :math:`\hat x = x / \lVert x \rVert`, and the trunk receives
    :math:`(\sum_i g_i \cdot \hat x)\, \hat x`. On the Gram matrix: :math:`x = J^\top a`,
    :math:`a = D (D G D)^{+} p` with :math:`D = \mathrm{diag}(1 / \lVert g_i \rVert)`, so the weights are
    :math:`a\, \mathbf 1^\top G a / a^\top G a` (TorchJD's ``ConFIG``, which takes the pseudo-inverse of the
    ``[T, D]`` unit matrix instead). The heads receive their own gradients.

    Args:
        pref_vector: T preference weights (default ones).
    """

    def __init__(self, pref_vector: Sequence[float] | None = None) -> None:
        self.pref_vector = None if pref_vector is None else [float(v) for v in pref_vector]

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        pref = torch.ones(t, dtype=gram.dtype, device=gram.device) if self.pref_vector is None else \
            torch.tensor(self.pref_vector, dtype=gram.dtype, device=gram.device)
        if pref.shape != (t,):
            raise ValueError(f'ConFIG pref_vector has {pref.numel()} values for {t} tasks')
        if not bool(torch.isfinite(gram).all()):
            return torch.full((t,), float('nan'), dtype=gram.dtype, device=gram.device)
        norms = gram.diagonal().clamp_min(0).sqrt()
        inv = torch.where(norms > 0, 1.0 / norms.clamp_min(1e-300), torch.zeros_like(norms))
        units_gram = inv[:, None] * gram * inv[None, :]
        a = inv * (torch.linalg.pinv(units_gram, hermitian=True) @ pref)
        sq = a @ gram @ a
        if float(sq) <= 0:
            return torch.zeros_like(a)
        return a * (gram.sum(0) @ a) / sq
