"""Aligned-MTL (Senushkin, Patakin, Kuznetsov & Konushin, CVPR 2023, "Independent Component Alignment for
Multi-Task Learning")."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from .base import register_method
from .weighting import GramWeighting

SCALE_MODES = ('min', 'median', 'rmse')


@register_method
class AlignedMTL(GramWeighting):
    r"""Aligned-MTL: make the gradient system well conditioned before combining it.

    With the Gram matrix :math:`G = V \Lambda V^\top` (eigenvalues above ``max(lambda) * T * eps`` kept, rank r),
    the balance transformation is :math:`B = \sqrt{\lambda_{s}}\, V \Lambda^{-1/2} V^\top`, where
    :math:`\lambda_s` is the smallest kept eigenvalue (``scale_mode='min'``, the paper's), the median or the mean
    (``'rmse'``, the authors' code); the aligned gradients :math:`\tilde g = G\text{-columns of } J^\top B` all have
    the same norm and are orthogonal. The trunk receives :math:`\sum_i w_i g_i` with :math:`w = B p`, ``p`` the
    preference vector (default :math:`1/T` each, as TorchJD's ``AlignedMTL``; LibMTL sums, i.e. T times this).
    When every eigenvalue is below the tolerance, :math:`B = I`. The heads receive their own gradients.

    Args:
        pref_vector: T preference weights (default uniform ``1/T``).
        scale_mode: ``'min'`` | ``'median'`` | ``'rmse'``.
    """

    def __init__(self, pref_vector: Sequence[float] | None = None, scale_mode: str = 'min') -> None:
        if scale_mode not in SCALE_MODES:
            raise ValueError(f'AlignedMTL scale_mode must be one of {SCALE_MODES}, got {scale_mode!r}')
        self.pref_vector = None if pref_vector is None else [float(v) for v in pref_vector]
        self.scale_mode = scale_mode

    def extra_repr(self) -> str:
        return f'scale_mode={self.scale_mode!r}'

    def weights(self, gram: Tensor, *, loss: Tensor | None, draws: list[Tensor], problem: int) -> Tensor:
        t = gram.shape[0]
        pref = torch.full((t,), 1.0 / t, dtype=gram.dtype, device=gram.device) if self.pref_vector is None else \
            torch.tensor(self.pref_vector, dtype=gram.dtype, device=gram.device)
        if pref.shape != (t,):
            raise ValueError(f'AlignedMTL pref_vector has {pref.numel()} values for {t} tasks')
        if not bool(torch.isfinite(gram).all()):
            return torch.full((t,), float('nan'), dtype=gram.dtype, device=gram.device)
        lam, vec = torch.linalg.eigh(gram)
        tol = float(lam.max()) * t * torch.finfo(gram.dtype).eps
        keep = lam > tol
        if not bool(keep.any()):
            return pref
        lam, vec = lam[keep], vec[:, keep]
        scale = {'min': lam.min(), 'median': lam.median(), 'rmse': lam.mean()}[self.scale_mode]
        balance = scale.sqrt() * (vec / lam.sqrt()) @ vec.T
        return balance @ pref
