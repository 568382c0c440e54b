"""Gradient Sign Dropout (GradDrop, Chen et al., NeurIPS 2020) and Random GradDrop."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from . import graddrop_kernel
from .base import (
    SMALL_TASK_TENSOR,
    ActivationFn,
    Method,
    as_task_vector,
    check_grads,
    coin_flips,
    register_method,
    sum_and_abs_sum_tasks,
    sum_tasks,
    uniform,
)
from .blocks import TaskBlocks


@register_method
class GradDrop(Method):
    r"""Gradient Sign Dropout: keep one gradient sign per element of the shared activation.

    With :math:`G_i = \partial L_i / \partial A` for tasks :math:`i = 1..T`:

    .. math::
        \mathcal{P} = \tfrac12 \Big(1 + \frac{\sum_i G_i}{\sum_i |G_i| + \epsilon}\Big), \qquad
        M_i = \mathbb{1}[f(\mathcal{P}) > U]\,\mathbb{1}[G_i > 0] + \mathbb{1}[f(\mathcal{P}) < U]\,\mathbb{1}[G_i < 0],

    with one :math:`U \sim \mathcal{U}(0, 1)` per element shared by all tasks (so exactly one sign survives per
    element), and the trunk receives :math:`\sum_i (\ell_i + (1 - \ell_i) M_i)\, G_i`.
    :math:`f(\mathcal{P}) = \mathrm{clip}(k(\mathcal{P} - \tfrac12) + \tfrac12, 0, 1)` unless ``activation_fn``
    is given. With :math:`k = 1` (:math:`f(P) = P`) the result is an unbiased estimate of :math:`\sum_i G_i`
    (Proposition 3 of the paper's appendix); smaller :math:`k` adds noise (CIFAR-100 used :math:`k = 0.25`).

    Batch-separated variant (paper Section 3.2, appendix A.2), for tasks that see different sub-batches: purity and
    signs come from :math:`H_i = \sum_b \mathrm{sign}(A_b)\, G_{i,b}` (dim 0 of the activation is the batch), one
    :math:`U` per feature position; the mask is broadcast over the batch and applied to the per-example
    :math:`G_{i,b}`.

    On the CPU, in float32 and without leaks (outside the batch-separated variant), the rule runs as one compiled
    pass over the stack (:mod:`~graddrop_mtl.methods.graddrop_kernel`), with the same values.

    Non-finite inputs: an element where a task's gradient is NaN or infinite gives a non-finite result (NaN, or
    inf where that sign is kept), as in every other method (the wrapper skips such steps); it is never dropped.

    Ties: an element where a task's gradient (or :math:`H_i`) is exactly zero is *dropped* for that task, as in the
    paper's formula (``keep_zero=False``). Outside the batch-separated variant this changes nothing (the dropped
    value is 0). In the batch-separated variant ``keep_zero=True`` keeps such per-example gradients, as the authors'
    lingvo code does.

    Args:
        k: slope of the default activation :math:`f`; 1 is the paper's default.
        leak: :math:`\ell_i`, one float for every task or a list of T floats in [0, 1]. 0 is pure GradDrop, 1 passes
            a task's gradient through untouched.
        batch_separated: use the batch-separated rule (needs ``activation``).
        keep_grad_norm: rescale the result to the L2 norm of the plain sum (what the authors' code does since 2021).
        activation_fn: a custom monotone :math:`f` with :math:`f(1-P) = 1 - f(P)`; overrides ``k``.
        keep_zero: keep elements whose task gradient is exactly zero (see Ties).
        eps: added to :math:`\sum_i |G_i|`. The default 0 computes the paper's exact ratio (elements where every
            gradient is zero get :math:`\mathcal{P} = 1/2`). The authors' lingvo code adds 1e-7, which pulls
            :math:`\mathcal{P}` toward 1/2 wherever gradients are small compared with it: the per-element
            gradients at PointPillars' neck output are about 1e-6, where that turns GradDrop into random dropping.
    """

    #: Choose the surviving sign by a fair coin, whatever the purity (:class:`RandomGradDrop`).
    fair_coin: bool = False

    def __init__(self, k: float = 1.0, leak: float | Sequence[float] = 0.0, batch_separated: bool = False,
                 keep_grad_norm: bool = False, activation_fn: ActivationFn | None = None, keep_zero: bool = False,
                 eps: float = 0.0) -> None:
        if k < 0:
            raise ValueError(f'GradDrop k must be >= 0, got {k}')
        leaks = [leak] if isinstance(leak, (int, float)) else list(leak)
        if any(not 0.0 <= float(v) <= 1.0 for v in leaks):
            raise ValueError(f'GradDrop leak values must lie in [0, 1], got {leak}')
        self.k = float(k)
        self.leak = float(leak) if isinstance(leak, (int, float)) else [float(v) for v in leak]
        self.batch_separated = batch_separated
        self.keep_grad_norm = keep_grad_norm
        self.activation_fn = activation_fn
        self.keep_zero = keep_zero
        self.eps = eps
        self.collect_stats = True
        self._stats: dict[str, float] = {}

    def extra_repr(self) -> str:
        return (f'k={self.k}, leak={self.leak}, batch_separated={self.batch_separated}, '
                f'keep_grad_norm={self.keep_grad_norm}')

    def keep_positive_probability(self, purity: Tensor) -> Tensor:
        """:math:`f(\\mathcal{P})`."""
        if self.activation_fn is not None:
            return self.activation_fn(purity)
        if self.k == 1.0:
            return purity
        return (self.k * (purity - 0.5) + 0.5).clamp_(0.0, 1.0)

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        check_grads(grads, problem_dims)
        n_tasks = grads.shape[0]
        leak = as_task_vector(self.leak, n_tasks, 'GradDrop leak', grads)
        if self.batch_separated:
            signed = self._batch_separated_signal(grads, activation, problem_dims)
        else:
            signed = grads
        shape = signed.shape[1:]
        n_problems = int(torch.Size(shape[:problem_dims]).numel())

        def draw() -> Tensor:
            return self._draw((n_problems,) + tuple(shape[problem_dims:]), generator, device=grads.device,
                              dtype=grads.dtype).reshape(shape)

        out, part = self._drop(grads, signed, leak, draw, self.collect_stats)
        if self.keep_grad_norm:
            out = out * self._norm_ratio(sum_tasks(grads), out, problem_dims)
        if part is not None:
            self._stats = _finish_stats(part, shape.numel())
        return out

    def combine_blocks(self, blocks: TaskBlocks, *, activation: Tensor | None = None, losses: Tensor | None = None,
                       generator: torch.Generator | None = None) -> Tensor:
        """GradDrop is elementwise: it runs on the dense base, then again at the patch rows with every task that is
        non-zero there. The result has the distribution of :meth:`combine`'s (the same up to rounding for a
        deterministic configuration), with uniforms drawn only where they are needed: at the patch rows, and on
        the base unless it is a single task that keeps every sign (``k >= 1``)."""
        if self.batch_separated:   # sums over the batch: not row-wise
            return super().combine_blocks(blocks, activation=activation, losses=losses, generator=generator)
        like = torch.empty(0, dtype=blocks.dtype, device=blocks.device)
        leak = as_task_vector(self.leak, blocks.n_tasks, 'GradDrop leak', like)
        stats = self.collect_stats
        total = _zero_stats(blocks.n_tasks, like) if stats else None
        if blocks.base is not None:
            out, part = self._drop(blocks.base, blocks.base, leak[blocks.base_tasks],
                                   lambda: self._draw(tuple(blocks.shape), generator, device=blocks.device,
                                                      dtype=blocks.dtype), stats)
            _add_stats(total, part, blocks.base_tasks)
        else:
            out = torch.zeros(blocks.shape, dtype=blocks.dtype, device=blocks.device)
        if blocks.patch is not None:
            n_patch = blocks.patch.shape[1:]
            u_patch = self._draw(tuple(n_patch), generator, device=blocks.device, dtype=blocks.dtype)
            patch_out, part = self._drop(blocks.patch, blocks.patch, leak[blocks.patch_tasks], lambda: u_patch,
                                         stats)
            _add_stats(total, part, blocks.patch_tasks)
            if stats and blocks.base is not None:   # the base's statistics at the patch rows are replaced
                base_at_patch = blocks.gather(blocks.base)
                _, part = self._drop(base_at_patch, base_at_patch, leak[blocks.base_tasks], lambda: u_patch, True)
                _add_stats(total, part, blocks.base_tasks, sign=-1)
            out = out.contiguous()
            blocks.scatter_(out, patch_out)
        if self.keep_grad_norm:
            out = out * self._norm_ratio(blocks.linear_combination(), out, 0)
        if stats:
            self._stats = _finish_stats(total, blocks.shape.numel())
        return out

    def _draw(self, shape: tuple[int, ...], generator, *, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The per-element random draw: uniforms (``dtype``), or fair coins (bool) when :attr:`fair_coin`."""
        if self.fair_coin:
            return coin_flips(shape, generator, device=device)
        return uniform(shape, generator, device=device, dtype=dtype)

    def _drop(self, grads: Tensor, signed: Tensor, leak: Tensor, draw: Callable[[], Tensor],
              stats: bool) -> tuple[Tensor, dict[str, Tensor] | None]:
        """``sum_i (l_i + (1 - l_i) M_i) G_i`` (a new tensor) for ``grads`` ``[t, ...]``, the sign signal ``signed``
        (``grads``, or the batch-separated :math:`H_i`), leaks ``[t]`` and ``draw()`` giving the uniforms (the coins
        when :attr:`fair_coin`: True keeps the positive sign), shaped like ``signed[0]``; with ``stats`` also the
        sums the logged statistics are made of."""
        n_tasks = grads.shape[0]
        if n_tasks == 1 and signed is grads and self.eps == 0:
            # One task: P is exactly 1 (positive gradient), 0 (negative) or 1/2 (zero), so f(P) takes two values.
            g = grads[0]
            if self.fair_coin:
                coin = draw()
                keep = torch.where(g > 0, coin, ~coin)
            else:
                f0, f1 = self.keep_positive_probability(
                    torch.tensor([0.0, 1.0], dtype=g.dtype, device=g.device)).tolist()
                # f(1) > U and f(0) < U for every U in (0, 1): each sign survives, no draw needed (the default
                # k >= 1; U = 0 exactly, which torch.rand can return with probability 2^-24, is treated as (0, 1)).
                if f1 >= 1.0 and f0 <= 0.0:
                    keep = None
                else:
                    u = draw()
                    keep = torch.where(g > 0, u < f1, u > f0)
            if keep is None:
                out = g.clone()
            else:
                ell = float(leak[0])
                out = g * keep if ell == 0.0 else g * (ell + (1.0 - ell) * keep.to(g.dtype))
            if not stats:
                return out, None
            nonzero = (g != 0).sum().reshape(1)
            kept = nonzero if keep is None else (keep & (g != 0)).sum().reshape(1)
            return out, dict(purity=0.5 * nonzero.double().sum(), conflicts=torch.zeros((), dtype=torch.float64),
                             kept=kept, nonzero=nonzero)
        if (signed is grads and not self.batch_separated and not self.keep_zero and self._kernel_rule()
                and grads[0].numel() > SMALL_TASK_TENSOR and not bool(leak.any())
                and graddrop_kernel.available(grads)):
            # the same rule in one compiled pass over the stack (graddrop_kernel); the draw comes at the same point
            # of the random stream as below (nothing else draws in between)
            out, part = graddrop_kernel.graddrop_pass(grads.reshape(n_tasks, -1), draw(), fair_coin=self.fair_coin,
                                                      k=self.k, eps=self.eps, stats=stats)
            return out.reshape(grads.shape[1:]), part
        # Positive and negative gradient mass per element from two fused reductions over the tasks:
        # pos = (sum + sum|.|) / 2, neg = (sum - sum|.|) / 2, and P = 1/2 (1 + sum / (sum|.| + eps)).
        total, mass = sum_and_abs_sum_tasks(signed)
        purity = None
        if stats or not self.fair_coin:
            denom = mass + self.eps if self.eps > 0 else mass.clamp_min(torch.finfo(mass.dtype).tiny)
            purity = 0.5 * (1.0 + total / denom)
        if self.fair_coin:
            keep_pos = draw()
            keep_neg = ~keep_pos
        else:
            keep_prob = self.keep_positive_probability(purity)
            u = draw()
            keep_pos = keep_prob > u
            keep_neg = keep_prob < u
        pos_mass = 0.5 * (total + mass)
        neg_mass = 0.5 * (total - mass)

        # sum_i (l_i + (1 - l_i) M_i) G_i. Without leaks (and outside the batch-separated variant) this is the
        # positive mass where the positive sign survives and the negative mass where the negative one does.
        lshape = (n_tasks,) + (1,) * (grads.dim() - 1)
        if self.batch_separated or self.keep_zero or bool(leak.any()):
            # +1 where the positive sign survives, -1 where the negative one does, 0 where neither (f(P) == U)
            survivor = keep_pos.to(grads.dtype) - keep_neg.to(grads.dtype)
            mask = ((signed * survivor) > 0).to(grads.dtype)
            if self.keep_zero:
                mask = mask + (signed == 0).to(grads.dtype)
            out = sum_tasks(grads * (leak.view(lshape) + (1.0 - leak).view(lshape) * mask))
        elif self.fair_coin:   # one side always survives
            out = torch.where(keep_pos, pos_mass, neg_mass)
        else:
            # where neither sign survives (f(P) == U, or P is NaN because an element is not finite): 0 for a finite
            # element, NaN for a non-finite one (total - total), so that NaN and inf inputs propagate as in the
            # other methods instead of being dropped
            out = torch.where(keep_pos, pos_mass, torch.where(keep_neg, neg_mass, total - total))
        if not stats:
            return out, None
        survivor = keep_pos.to(grads.dtype) - keep_neg.to(grads.dtype)
        kept, nonzero = sign_counts(signed.reshape(n_tasks, -1), survivor.reshape(-1))
        return out, dict(purity=(purity - 0.5).abs().double().sum(),
                         conflicts=((pos_mass > 0) & (neg_mass < 0)).double().sum(), kept=kept, nonzero=nonzero)

    def _kernel_rule(self) -> bool:
        """Whether :math:`f` is one the compiled pass knows: the fair coin, or this class's clip rule (not an
        ``activation_fn``, nor a subclass's own :meth:`keep_positive_probability`)."""
        if self.fair_coin:
            return True
        return self.activation_fn is None and \
            type(self).keep_positive_probability is GradDrop.keep_positive_probability

    def _batch_separated_signal(self, grads: Tensor, activation: Tensor | None, problem_dims: int) -> Tensor:
        if activation is None:
            raise ValueError('batch-separated GradDrop needs the shared activation (activation=...)')
        if activation.shape != grads.shape[1:]:
            raise ValueError(f'activation shape {tuple(activation.shape)} does not match the per-task gradient '
                             f'shape {tuple(grads.shape[1:])}')
        batch_dim = 1 + problem_dims
        return (grads * torch.sign(activation).to(grads.dtype)).sum(batch_dim, keepdim=True)

    @staticmethod
    def _norm_ratio(reference: Tensor, out: Tensor, problem_dims: int) -> Tensor:
        dims = tuple(range(problem_dims, out.dim()))
        ref = reference.pow(2).sum(dims, keepdim=True).sqrt()
        got = out.pow(2).sum(dims, keepdim=True).sqrt()
        return torch.where(got > 0, ref / got.clamp_min(1e-30), torch.zeros_like(got))


@register_method
class RandomGradDrop(GradDrop):
    r"""Random GradDrop (the rebuttal's RGD): one sign per element kept by a fair coin, ignoring the gradients.

    :class:`GradDrop` with :math:`f(\mathcal{P}) = 1/2`: the same masking, leak and batch-separated variant, but the
    surviving sign is chosen with probability 1/2 regardless of the sign purity. The rebuttal shows its expected
    first-order loss change is half of GradDrop's. The coin is a random bit (:func:`~.base.coin_flips`, eight per
    random byte), not a compared uniform: the same law as ``GradDrop(k=0)`` (which keeps neither sign in the
    probability-2^-24 event U = 1/2) with a quarter of the random draws' cost.
    """

    fair_coin = True

    def __init__(self, leak: float | Sequence[float] = 0.0, batch_separated: bool = False,
                 keep_grad_norm: bool = False, keep_zero: bool = False) -> None:
        super().__init__(k=0.0, leak=leak, batch_separated=batch_separated, keep_grad_norm=keep_grad_norm,
                         keep_zero=keep_zero)

    def extra_repr(self) -> str:
        return f'leak={self.leak}, batch_separated={self.batch_separated}'

    def keep_positive_probability(self, purity: Tensor) -> Tensor:
        return torch.full_like(purity, 0.5)


#: Elements (rows x columns) per chunk in :func:`sign_counts`: 1 MB of float32, so that a chunk's signs stay in a
#: core's L2 cache between the products (at CelebA's [40, 262,144] 2.5x faster than one pass over the whole
#: tensor); a row's part is at most 2**18 values in {-1, 0, 1}, whose float32 sum is exact.
SIGN_COUNT_CHUNK = 1 << 18


def sign_counts(flat: Tensor, survivor: Tensor) -> tuple[Tensor, Tensor]:
    r"""Per row of ``flat`` ``[t, n]``: how many elements have the sign of ``survivor`` ``[n]`` (+1, -1 or 0), and
    how many are non-zero (int64 ``[t]`` each; the kept fraction's numerator and denominator).

    With :math:`s = \mathrm{sign}(x)`: agreeing = :math:`(s \cdot v + |s| \cdot |v|) / 2` and non-zero =
    :math:`\sum |s|`, as float matrix-vector products over column chunks of about :data:`SIGN_COUNT_CHUNK`
    elements (exact: integer sums below 2^24 per chunk, chunks added in float64). Several times faster than
    ``((x * v) > 0).sum(1)``, whose boolean-to-int64 conversion of ``[t, n]`` costs more than the rest of GradDrop's
    combine.
    """
    dtype = flat.dtype if flat.dtype in (torch.float32, torch.float64) else torch.float32
    agree = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
    nonzero = torch.zeros_like(agree)
    cols = max(1, SIGN_COUNT_CHUNK // flat.shape[0])
    for start in range(0, flat.shape[1], cols):
        s = torch.sign(flat[:, start:start + cols]).to(dtype)
        v = survivor[start:start + cols].to(dtype)
        agree += (s @ v).double()
        s.abs_()
        agree += (s @ v.abs()).double()
        nonzero += s.sum(1).double()
    return (agree / 2).round().long(), nonzero.round().long()


def _zero_stats(n_tasks: int, like: Tensor) -> dict[str, Tensor]:
    zero = torch.zeros((), dtype=torch.float64, device=like.device)
    counts = torch.zeros(n_tasks, dtype=torch.long, device=like.device)
    return dict(purity=zero, conflicts=zero.clone(), kept=counts, nonzero=counts.clone())


def _add_stats(total: dict[str, Tensor] | None, part: dict[str, Tensor] | None, tasks: list[int],
               sign: int = 1) -> None:
    if total is None or part is None:
        return
    total['purity'] = total['purity'] + sign * part['purity']
    total['conflicts'] = total['conflicts'] + sign * part['conflicts']
    idx = torch.tensor(tasks, device=total['kept'].device)
    total['kept'].index_add_(0, idx, sign * part['kept'])
    total['nonzero'].index_add_(0, idx, sign * part['nonzero'])


def _finish_stats(part: dict[str, Tensor], n_elements: int) -> dict[str, float]:
    """Logged statistics: mean |P - 1/2| and the conflict fraction over the elements, kept fraction per task."""
    kept = (part['kept'].double() / part['nonzero'].clamp_min(1).double()).tolist()
    n_elements = max(n_elements, 1)      # an empty activation: sums of 0 over 0 elements, reported as 0
    return {'sign_purity': float(part['purity']) / n_elements,
            'conflict_frac': float(part['conflicts']) / n_elements,
            **{f'kept_frac_{i}': float(v) for i, v in enumerate(kept)}}
