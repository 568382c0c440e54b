"""Per-task gradients at a shared activation that is read only by linear layers (``MultiTaskOptimWrapper``'s
``linear_heads``): take each task's gradient at the layers' small outputs, then map it back through their weights.

For 1x1 convolutions and ``Linear`` layers the mapping is row-wise (one position, or one sample, at a time), so
the result can stay sparse: :func:`task_blocks` stores the tasks that are non-zero almost everywhere densely and the
others only at the rows where they are non-zero (:class:`~graddrop_mtl.methods.blocks.TaskBlocks`).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..methods.blocks import TaskBlocks

LINEAR_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def head_output_grads(task_losses: list[Tensor], outs: list[Tensor]) -> list[tuple[Tensor | None, ...]]:
    """``[task][layer]``: the gradient of each task loss at each head layer's output (``None``: not read)."""
    return [torch.autograd.grad(loss.sum(), outs, retain_graph=True, allow_unused=True) for loss in task_losses]


def dense_task_grads(grads_out: list[tuple[Tensor | None, ...]], acts: list[Tensor], head_calls) -> list[Tensor]:
    """Stacked per-task gradients ``[T, *act.shape]`` for every shared activation (any linear layer type)."""
    n_tasks = len(grads_out)
    per_act: list[list[Tensor | None]] = [[None] * n_tasks for _ in acts]
    for i, g_outs in enumerate(grads_out):
        for (layer, j, _), g_out in zip(head_calls, g_outs):
            if g_out is not None:
                g = linear_input_grad(layer, acts[j], g_out)
                per_act[j][i] = g if per_act[j][i] is None else per_act[j][i] + g
    return [torch.stack([g if g is not None else torch.zeros_like(acts[j]) for g in per_act[j]])
            for j in range(len(acts))]


def used_channels(grad_out: Tensor, channel_dim: int) -> Tensor:
    """Indices of the output channels (features for ``Linear``) where ``grad_out`` is non-zero anywhere. A channel
    holding NaN counts as used (``nan != 0``), so a non-finite gradient reaches the finiteness check."""
    flat = grad_out.movedim(channel_dim % grad_out.dim(), 0).reshape(grad_out.shape[channel_dim], -1)
    return flat.ne(0).any(1).nonzero().flatten()


def _zero_padding(layer: nn.Module) -> tuple[int, ...] | None:
    """The convolution's padding as a tuple for ``torch.nn.grad.conv*d_input`` when it pads with zeros the same
    amount on both sides; ``None`` otherwise (another ``padding_mode``, or ``'same'`` with an even kernel extent)."""
    if layer.padding == 'valid':
        return (0,) * len(layer.kernel_size)
    if layer.padding == 'same':
        total = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]
        if any(t % 2 for t in total):
            return None
        padding = tuple(t // 2 for t in total)
    else:
        padding = tuple(layer.padding)
    if layer.padding_mode != 'zeros' and any(padding):
        return None
    return padding


def linear_input_grad(layer: nn.Module, act: Tensor, grad_out: Tensor) -> Tensor:
    """The gradient at a linear layer's input for ``grad_out`` at its output, using only the output channels
    (features for ``Linear``) where ``grad_out`` is non-zero.

    Convolutions that pad with zeros symmetrically map back by ``torch.nn.grad.conv*d_input``; any other padding
    (``padding_mode`` ``'reflect'``, ``'replicate'``, ``'circular'``, or ``padding='same'`` with an even kernel
    extent) by autograd through the layer's own padding and convolution, which is exact for every padding mode."""
    channel_dim = -1 if isinstance(layer, nn.Linear) else 1
    idx = used_channels(grad_out, channel_dim)
    if not idx.numel():
        return torch.zeros_like(act)
    weight = layer.weight.detach().index_select(0, idx)
    g = grad_out.index_select(channel_dim % grad_out.dim(), idx)
    if isinstance(layer, nn.Linear):
        return g @ weight
    if layer.groups != 1:
        raise TypeError(f'linear_heads: grouped convolutions are not supported ({layer})')
    padding = _zero_padding(layer)
    if padding is None:
        with torch.enable_grad():
            x = act.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(layer._conv_forward(x, weight.to(x.dtype), None), x, g.to(x.dtype))
        return grad
    fn = (torch.nn.grad.conv1d_input if isinstance(layer, nn.Conv1d) else
          torch.nn.grad.conv2d_input if isinstance(layer, nn.Conv2d) else torch.nn.grad.conv3d_input)
    return fn(act.shape, weight, g, stride=layer.stride, padding=padding, dilation=layer.dilation)


def is_pointwise(layer: nn.Module) -> bool:
    """``Linear``, or a convolution that maps each position to itself (1x1 kernel, stride 1, no padding, no
    groups; ``padding='same'`` pads nothing with a 1x1 kernel)."""
    if isinstance(layer, nn.Linear):
        return True
    if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or layer.groups != 1:
        return False
    padding_free = isinstance(layer.padding, str) or all(p == 0 for p in layer.padding)
    return all(k == 1 for k in layer.kernel_size) and all(s == 1 for s in layer.stride) and padding_free


def task_blocks(grads_out: list[tuple[Tensor | None, ...]], act: Tensor, head_calls) -> TaskBlocks | None:
    """The per-task gradients at ``act`` as :class:`TaskBlocks`, or ``None`` when the heads are not all pointwise
    layers of one kind (then use :func:`dense_task_grads`).

    Which rows each task is non-zero at is read off the head-output gradients. The tasks, ranked by how many rows
    they cover, form the dense base up to the rank that minimises ``|base| * rows + |patch tasks| * patch rows``
    (the patch rows being those where a task outside the base is non-zero).
    """
    layers = [layer for layer, _, _ in head_calls]
    kinds = {isinstance(layer, nn.Linear) for layer in layers}
    n_tasks = len(grads_out)
    if not layers or len(kinds) != 1 or not all(is_pointwise(layer) for layer in layers) or act.dim() < 2:
        return None
    channel_dim = -1 if kinds.pop() else 1
    n_channels = act.shape[channel_dim]
    n_rows = act.numel() // n_channels
    weights = [layer.weight.detach().reshape(layer.weight.shape[0], -1) for layer in layers]   # [out, C]
    if any(w.shape[1] != n_channels for w in weights):
        return None

    # Per task: the used output channels of every layer, concatenated: gradient g_i (conv: [B, c_i, P]; Linear:
    # [R, c_i]) and weights W_i [c_i, C], so that the task's gradient at the activation is W_i^T g_i row by row.
    support = torch.zeros(n_tasks, n_rows, dtype=torch.bool, device=act.device)
    task_g: list[Tensor | None] = [None] * n_tasks
    task_w: list[Tensor | None] = [None] * n_tasks
    for i, g_outs in enumerate(grads_out):
        gs, ws = [], []
        for k, g in enumerate(g_outs):
            if g is None:
                continue
            g = g.reshape(g.shape[0], g.shape[1], -1) if channel_dim == 1 else g.reshape(-1, g.shape[-1])
            nonzero = g != 0
            used = nonzero.any(0).any(-1) if channel_dim == 1 else nonzero.any(0)
            if not bool(used.any()):
                continue
            idx = used.nonzero().flatten()
            gs.append(g.index_select(1 if channel_dim == 1 else -1, idx))
            ws.append(weights[k].index_select(0, idx))
            support[i] |= (nonzero.any(1) if channel_dim == 1 else nonzero.any(-1)).reshape(-1)
        if gs:
            task_g[i] = gs[0] if len(gs) == 1 else torch.cat(gs, 1 if channel_dim == 1 else -1)
            task_w[i] = ws[0] if len(ws) == 1 else torch.cat(ws, 0)

    # The base: the m tasks that cover the most rows, for the m of least cost.
    covered = support.sum(1)
    order = covered.argsort(descending=True, stable=True).tolist()
    outside = torch.zeros(n_rows, dtype=torch.bool, device=act.device)
    best = None
    for m in range(n_tasks, -1, -1):   # base = order[:m]; `outside`: rows where a task in order[m:] is non-zero
        if m < n_tasks:
            outside |= support[order[m]]
        n_patch = int(outside.sum())
        active_outside = [i for i in order[m:] if int(covered[i])]
        cost = m * n_rows + (n_patch * (m + len(active_outside)) if n_patch else 0)
        if best is None or cost < best[0]:
            best = (cost, m, outside.clone() if n_patch else None)
    _, m, patch_mask = best
    base_tasks = sorted(order[:m])

    base = None
    if base_tasks:
        base = act.new_empty((len(base_tasks), *act.shape))
        for k, i in enumerate(base_tasks):
            if task_g[i] is None:
                base[k].zero_()
            elif channel_dim == 1:   # [C, c] @ [B, c, P] -> [B, C, P]
                torch.matmul(task_w[i].t(), task_g[i], out=base[k].view(act.shape[0], n_channels, -1))
            else:
                torch.matmul(task_g[i], task_w[i], out=base[k].view(-1, n_channels))
    common = dict(channel_dim=channel_dim, dtype=act.dtype, device=act.device)
    if patch_mask is None:
        return TaskBlocks(n_tasks, act.shape, base=base, base_tasks=base_tasks, **common)
    patch_rows = patch_mask.nonzero().flatten()
    patch_tasks = sorted(set(base_tasks) | {i for i in range(n_tasks) if bool(support[i, patch_rows].any())})
    patch = act.new_zeros((len(patch_tasks), len(patch_rows), n_channels))
    per_sample = n_rows // act.shape[0]
    for k, i in enumerate(patch_tasks):
        if task_g[i] is None:
            continue
        if channel_dim == 1:
            rows_g = task_g[i][patch_rows // per_sample, :, patch_rows % per_sample]    # [n, c]
        else:
            rows_g = task_g[i].index_select(0, patch_rows)
        torch.matmul(rows_g, task_w[i], out=patch[k])
    return TaskBlocks(n_tasks, act.shape, base=base, base_tasks=base_tasks, patch=patch, patch_rows=patch_rows,
                      patch_tasks=patch_tasks, **common)
