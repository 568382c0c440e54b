"""Per-task gradients at the shared activation(s): the gradient ``dL_i/dA`` of every task loss at the detached copy
``A`` that the heads consumed, by one of the ``grad_mode`` s of :class:`~graddrop_mtl.engine.MultiTaskOptimWrapper`.

* ``'loop'``: one ``autograd.grad`` call per task, stacked: ``[T, *A.shape]``;
* ``'batched'``: one ``autograd.grad`` call with ``is_grads_batched=True`` (vmap over the tasks), the same stack;
* ``'linear'``: through the linear layers that consume ``A`` (:mod:`graddrop_mtl.engine.linear_heads`): each task's
  gradient is taken at the layers' small outputs and mapped back through their weights; when the layers are all
  pointwise (1x1 convolutions, or ``Linear``) the result stays sparse
  (:class:`~graddrop_mtl.methods.blocks.TaskBlocks`), a dense tensor only for the tasks that are non-zero almost
  everywhere;
* ``'auto'``: decided on the first step by rules, never by timing (a seeded run must not depend on the machine's
  load), and logged with the reason:

  1. **structure**: ``'linear'`` applies when every path of the autograd graph from the task losses to ``A`` passes
     through a linear layer that read ``A`` and the layers are supported. The layers are the configured
     ``linear_heads``, or without them every ``Linear`` / ``Conv*d`` whose input is ``A`` itself (found by the
     wrapper's forward hooks), used when they are all pointwise (sparse blocks) and a dense stack would take at
     least :data:`AUTO_LINEAR_MIN_BYTES` or would not fit (rule 2). A sparse result is checked against autograd
     through the same layers at a few rows (every task; the rows where the sparse tasks live included), which
     costs no dense copy. A dense ``'linear'`` result (listed non-pointwise layers) counts as a dense stack for
     rule 2 and is checked against the loop when both fit.
  2. **memory**: a mode that stacks ``T`` dense gradients (``loop``, ``batched``) is a candidate only when the
     stack, ``T x numel x itemsize`` estimated before anything runs, takes at most :data:`DENSE_FRACTION` of the
     memory available (RAM on the CPU, free device memory on CUDA; under DDP the smallest of all ranks, and rank
     0's choice is every rank's); otherwise ``auto`` raises an error that says
     what to set, before any allocation. A user who wants the dense stack anyway sets ``grad_mode='loop'``.
  3. **agreement**: between the dense modes, ``'batched'`` when it runs (vmap can batch the heads) and agrees with
     the loop, else ``'loop'``. An allocation failure of a candidate (``torch.OutOfMemoryError``, ``MemoryError``,
     the CPU allocator's ``RuntimeError``) rules the candidate out like any other failure.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..methods.blocks import TaskBlocks
from .linear_heads import LINEAR_TYPES, dense_task_grads, head_output_grads, is_pointwise, task_blocks
from .sync import min_across_ranks, same_on_all_ranks

GRAD_MODES = ('auto', 'loop', 'batched', 'linear')
#: Largest share of the available memory that ``'auto'`` lets a dense ``[T, *A.shape]`` stack take.
DENSE_FRACTION = 0.25
#: Without ``linear_heads``, ``'auto'`` takes the per-task gradients through the linear layers it finds only when a
#: dense stack would take at least this many bytes: below it the dense modes cost little, and the methods keep
#: their dense path (and its random draws) on small models.
AUTO_LINEAR_MIN_BYTES = 64 * 2**20
#: Rows per task at which ``'auto'`` checks sparse ``'linear'`` gradients against autograd through the layers.
CHECK_ROWS = 16
#: What a failed candidate raises: autograd/vmap errors and allocation failures (``torch.OutOfMemoryError`` and
#: the CPU allocator's "can't allocate memory" are ``RuntimeError`` s).
CANDIDATE_ERRORS = (RuntimeError, MemoryError)


def available_memory(device: torch.device) -> int | None:
    """Bytes that can still be allocated on ``device`` (``None``: unknown). CUDA: the device's free memory plus
    what PyTorch's caching allocator holds unused; CPU: the system's available memory, bounded by the cgroup limit
    of the process (containers)."""
    if device.type == 'cuda':
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != 'cpu':
        return None
    avail = None
    try:
        import psutil
        avail = int(psutil.virtual_memory().available)
    except ImportError:
        try:
            with open('/proc/meminfo') as f:
                for line in f:
                    if line.startswith('MemAvailable:'):
                        avail = int(line.split()[1]) * 1024
        except OSError:
            pass
    for limit_file, usage_file in (('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory.current'),
                                   ('/sys/fs/cgroup/memory/memory.limit_in_bytes',
                                    '/sys/fs/cgroup/memory/memory.usage_in_bytes')):
        try:
            with open(limit_file) as f:
                limit = f.read().strip()
            with open(usage_file) as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            room = max(0, int(limit) - usage)
            avail = room if avail is None else min(avail, room)
        break
    return avail


def _gib(n: float) -> str:
    """``n`` bytes in words (``'6.07 GiB'``, ``'4.5 KiB'``)."""
    for unit, size in (('GiB', 2**30), ('MiB', 2**20), ('KiB', 2**10)):
        if n >= size:
            return f'{n / size:.3g} {unit}' if unit != 'GiB' else f'{n / size:.2f} GiB'
    return f'{int(n)} B'


class TaskGradients:
    """Computes the per-task gradients ``[T, *A.shape]`` (one stack per shared activation, or :class:`TaskBlocks`).

    Args:
        mode: one of :data:`GRAD_MODES`; ``'auto'`` is replaced by the chosen mode on the first call.
        linear_heads: the configured linear head layers (dotted names), or a bool for whether there are any. Without
            them, ``'auto'`` looks for the linear layers that read the activation itself (:meth:`hook_targets`).
        problem_dims: leading dims of the activation that index independent problems (no sparse blocks then).
    """

    def __init__(self, mode: str = 'auto', linear_heads: Sequence[str] | bool = False, problem_dims: int = 0) -> None:
        if mode not in GRAD_MODES:
            raise ValueError(f'grad_mode must be one of {GRAD_MODES}, got {mode!r}')
        self.mode = mode
        self.listed = bool(linear_heads)
        self.problem_dims = int(problem_dims)
        self.reason = ''          # why 'auto' chose the mode (logged)
        self._checked = False     # an explicit 'linear' is checked for structure once
        self._names: dict[nn.Module, str] = {}

    # ------------------------------------------------------------------------------------------------ set-up
    def hook_targets(self, model: nn.Module, listed: Sequence[nn.Module]) -> list[nn.Module]:
        """The layers whose calls on the shared activation the wrapper records (``head_calls``): the listed
        ``linear_heads``, or, without them, every linear layer of ``model`` in ``'auto'`` mode (the ones that read
        the activation itself are the candidates) and in ``'linear'`` mode (which ``'auto'`` chose on the layers it
        found, restored from a checkpoint). Also remembers the modules' names for messages."""
        self._names = {m: name for name, m in model.named_modules()}
        if listed:
            return list(listed)
        if self.mode not in ('auto', 'linear'):
            return []
        return [m for m in model.modules() if isinstance(m, LINEAR_TYPES)]

    def _name(self, module: nn.Module) -> str:
        return self._names.get(module) or type(module).__name__

    # ------------------------------------------------------------------------------------------------ the modes
    def __call__(self, task_losses: list[Tensor], acts: list[Tensor], head_calls: list) -> list[Tensor] | TaskBlocks:
        if self.mode == 'auto':
            mode, result = self.choose(task_losses, acts, head_calls)
            # One decision for all ranks: the rules see the same shapes and the smallest memory of all ranks, so
            # they agree; rank 0's choice is taken all the same, so that no rank can end up in another mode.
            chosen = GRAD_MODES[same_on_all_ranks(GRAD_MODES.index(mode))]
            if chosen != mode:
                self._decide(chosen, f"rank 0's choice (this rank chose {mode!r}: {self.reason})")
                result = None
            if result is not None:
                return result
            return self.compute(chosen, task_losses, acts, head_calls)
        if self.mode == 'linear' and not self._checked:
            problem = self.linear_structure(task_losses, acts, head_calls)
            if problem:
                raise RuntimeError(f"grad_mode='linear': {problem}")
            self._checked = True
        return self.compute(self.mode, task_losses, acts, head_calls)

    def compute(self, mode: str, task_losses, acts, head_calls) -> list[Tensor] | TaskBlocks:
        if mode == 'batched':
            return self.batched(task_losses, acts)
        if mode == 'linear':
            return self.linear(task_losses, acts, head_calls)
        return self.loop(task_losses, acts)

    def linear(self, task_losses, acts, head_calls) -> list[Tensor] | TaskBlocks:
        return self._linear(task_losses, acts, head_calls)[0]

    def _linear(self, task_losses, acts, head_calls) -> tuple[list[Tensor] | TaskBlocks, list]:
        """The ``'linear'`` result and the gradients at the layers' outputs it was mapped from."""
        if not head_calls:
            raise RuntimeError('linear_heads: none of the listed layers consumed the shared activation')
        grads_out = head_output_grads(task_losses, [out for _, _, out in head_calls])
        if len(acts) == 1 and not self.problem_dims:
            blocks = task_blocks(grads_out, acts[0], head_calls)
            if blocks is not None:
                return blocks, grads_out
        return dense_task_grads(grads_out, acts, head_calls), grads_out

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

    # ------------------------------------------------------------------------------------------------ the rules
    def linear_structure(self, task_losses, acts, head_calls) -> str | None:
        """``None`` when the per-task gradients can be taken through the recorded linear layers (``head_calls``)
        exactly: every path of the autograd graph from the task losses to an activation passes through one of
        their outputs, and the layers are supported. Else what is in the way, in words."""
        if not head_calls:
            return 'no linear layer (nn.Linear / nn.Conv1d/2d/3d) read the shared activation itself'
        for layer, _, out in head_calls:
            if isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and layer.groups != 1:
                return f'{self._name(layer)!r} is a grouped convolution ({layer}), which is not supported'
            if out._version != 0:
                return (f'the output of {self._name(layer)!r} was modified in place after the layer (e.g. by an '
                        'inplace activation), so the gradient at it is not the layer\'s')
        bypass = bypassing_consumers(task_losses, acts, [out for _, _, out in head_calls])
        if any(bypass):
            found = sorted({self._name(layer) for layer, _, _ in head_calls})
            other = sorted({name for names in bypass for name in names})
            return (f'the shared activation is also read by operations other than the linear layers {found}: '
                    f'autograd nodes {other} consume it directly')
        return None

    def choose(self, task_losses, acts, head_calls) -> tuple[str, list[Tensor] | TaskBlocks | None]:
        """The mode for ``'auto'`` by the rules of the module docstring, and its result when it was computed on the
        way (else ``None``). Sets :attr:`mode` and :attr:`reason` and logs them."""
        n_tasks = len(task_losses)
        act_bytes = sum(a.numel() * a.element_size() for a in acts)
        stack_bytes = n_tasks * act_bytes
        avail = min_across_ranks(available_memory(acts[0].device))   # the same budget on every rank
        budget = None if avail is None else int(DENSE_FRACTION * avail)
        dense_ok = budget is None or stack_bytes <= budget
        shapes = ', '.join(str(list(a.shape)) for a in acts)
        stack_note = (f'a dense stack of {n_tasks} x [{shapes}] would take {_gib(stack_bytes)}'
                      + ('' if budget is None else f' (allowed: {_gib(budget)}, {DENSE_FRACTION:g} of the '
                                                   f'{_gib(avail)} available)'))
        notes = []
        # 1. structure: the linear layers
        problem = self.linear_structure(task_losses, acts, head_calls)
        pointwise = not problem and len(acts) == 1 and not self.problem_dims and \
            len({isinstance(layer, nn.Linear) for layer, _, _ in head_calls}) == 1 and \
            all(is_pointwise(layer) for layer, _, _ in head_calls)
        found_worth = not self.listed and (stack_bytes >= AUTO_LINEAR_MIN_BYTES or not dense_ok)
        if problem is None and ((self.listed and (pointwise or dense_ok)) or (found_worth and pointwise)):
            layers = sorted({self._name(layer) for layer, _, _ in head_calls})
            try:
                result, grads_out = self._linear(task_losses, acts, head_calls)
                if isinstance(result, TaskBlocks):
                    # sparse: checked at a few rows, no dense copy
                    mismatch = check_blocks_at_rows(result, grads_out, head_calls)
                    checked = f'checked against autograd through the layers at {CHECK_ROWS} rows'
                elif budget is None or 2 * stack_bytes <= budget:
                    mismatch = _mismatch(self.loop(task_losses, acts), result, 'the loop')
                    checked = 'checked against the loop'
                else:
                    mismatch, checked = None, 'too large to check against the loop; structure checked'
                del grads_out
            except CANDIDATE_ERRORS as err:
                result, mismatch = None, f'failed: {_first_line(err)}'
            if mismatch is None:
                how = 'sparse blocks' if isinstance(result, TaskBlocks) else 'dense'
                return self._decide('linear', f'the activation is read only by the linear layers {layers} '
                                              f'({how}; {checked}); {stack_note}'), result
            notes.append(f'linear through {layers} not used: {mismatch}')
        elif problem is None and not self.listed and not found_worth:
            notes.append(f'linear layers found but not used: a dense stack is small (< {_gib(AUTO_LINEAR_MIN_BYTES)})')
        elif problem is None:
            notes.append('linear not used: the layers are not all pointwise (1x1 convolutions or Linear) and '
                         + ('a dense result would not fit' if self.listed else 'linear_heads does not list them'))
        else:
            notes.append(f'linear not used: {problem}')
        # 2. memory: the dense modes
        if not dense_ok:
            raise RuntimeError(
                f"MultiTaskOptimWrapper grad_mode='auto': per-task gradients at the shared activation need a dense "
                f'stack, and {stack_note}. {"; ".join(notes)}. Set linear_heads=[...] to the 1x1 convolution / '
                "Linear layers that read the activation (e.g. mmdet3d's Anchor3DHead: ['pts_bbox_head.conv_cls', "
                "'pts_bbox_head.conv_reg', 'pts_bbox_head.conv_dir_cls']), or grad_mode='loop' to take the dense "
                'stack anyway.')
        try:
            reference = self.loop(task_losses, acts)
        except CANDIDATE_ERRORS as err:
            raise RuntimeError(f"MultiTaskOptimWrapper grad_mode='auto': the loop over the tasks failed "
                               f'({_first_line(err)}); {stack_note}; {"; ".join(notes)}') from err
        # 3. agreement: batched if it runs and agrees with the loop
        if budget is not None and 2 * stack_bytes > budget:
            notes.append('batched not tried: it and the loop together would not fit')
            return self._decide('loop', '; '.join(notes + [stack_note])), reference
        try:
            batched = self.batched(task_losses, acts)
            mismatch = _mismatch(reference, batched, 'the loop')
        except CANDIDATE_ERRORS as err:
            batched, mismatch = None, f'failed: {_first_line(err)}'
        if mismatch is None:
            del reference
            return self._decide('batched', '; '.join(notes + ['batched agrees with the loop', stack_note])), batched
        del batched
        notes.append(f'batched not used: {mismatch}')
        return self._decide('loop', '; '.join(notes + [stack_note])), reference

    def _decide(self, mode: str, reason: str) -> str:
        self.mode, self.reason = mode, reason
        print_log(f"MultiTaskOptimWrapper: grad_mode='auto' uses {mode!r}: {reason}", logger='current')
        return mode


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:160]


def _mismatch(reference: list[Tensor], result: list[Tensor], what: str) -> str | None:
    """``None`` when ``result`` agrees with ``reference`` (one stack per activation) to the per-task gradients'
    rounding (relative to the largest value); else a description."""
    scale = max(1e-30, max(float(r.abs().nan_to_num(posinf=0, neginf=0).max()) for r in reference))
    tol = _tolerance(reference[0])
    for a, b in zip(reference, result):
        if a.shape != b.shape or not torch.allclose(a, b, rtol=tol, atol=tol * 0.1 * scale, equal_nan=True):
            return f'differs from {what}'
    return None


def _tolerance(t: Tensor) -> float:
    """Relative tolerance of a comparison: float32 at the exact matmul precision agrees to 1e-4; a reduced
    precision (bf16/tf32 matmuls, a low-precision activation) to a few 1e-3 of the largest value."""
    if t.dtype in (torch.float16, torch.bfloat16):
        return 5e-2
    backend = torch.backends.cuda.matmul if t.device.type == 'cuda' else torch.backends.mkldnn.matmul
    precision = getattr(backend, 'fp32_precision', 'ieee')
    return 1e-4 if precision in ('ieee', 'none') else 5e-2


def bypassing_consumers(task_losses: Sequence[Tensor], acts: Sequence[Tensor],
                        barriers: Sequence[Tensor]) -> list[set[str]]:
    """Per activation: the names of the autograd nodes that read it on a path from the task losses that does not
    pass through one of the ``barriers`` (the linear layers' outputs). Empty sets: every path goes through them.

    A walk over the graph of the losses (the shared activations are leaves, so it ends there unless something
    reads other trunk tensors); no tensor is allocated."""
    act_index = {id(a): j for j, a in enumerate(acts)}
    stop = {b.grad_fn for b in barriers if b.grad_fn is not None}
    found: list[set[str]] = [set() for _ in acts]
    seen = set()
    stack = [loss.grad_fn for loss in task_losses if loss.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node in seen or node in stop:
            continue
        seen.add(node)
        for nxt, _ in node.next_functions:
            if nxt is None:
                continue
            var = getattr(nxt, 'variable', None)
            if var is not None:
                j = act_index.get(id(var))
                if j is not None:
                    found[j].add(node.name())
                continue
            stack.append(nxt)
    return found


def _rows_of_task(blocks: TaskBlocks, i: int, rows: Tensor) -> Tensor:
    """Task ``i``'s gradient at ``rows`` (``[n, C]``) read from the blocks, without densifying them."""
    out = torch.zeros(rows.numel(), blocks.n_channels, dtype=blocks.dtype, device=blocks.device)
    per_sample = blocks.n_rows // blocks.shape[0] if blocks.channel_dim == 1 else None
    if i in blocks.base_tasks:
        v = blocks._rows_view(blocks.base[blocks.base_tasks.index(i)])
        out = v[rows // per_sample, :, rows % per_sample] if blocks.channel_dim == 1 else v[rows]
    if blocks.patch is not None and i in blocks.patch_tasks:
        pos = torch.searchsorted(blocks.patch_rows, rows).clamp_max(blocks.patch_rows.numel() - 1)
        hit = blocks.patch_rows[pos] == rows
        out = out.clone()
        out[hit] = blocks.patch[blocks.patch_tasks.index(i)][pos[hit]]
    return out


def check_rows(blocks: TaskBlocks) -> Tensor:
    """The rows at which :func:`check_blocks_at_rows` compares: up to ``CHECK_ROWS / 2`` of the patch rows (where
    the sparse tasks live) and the rest spread evenly over all rows."""
    n = blocks.n_rows
    spread = torch.linspace(0, n - 1, steps=min(n, CHECK_ROWS - CHECK_ROWS // 2), device=blocks.device).long()
    parts = [spread]
    if blocks.patch_rows is not None and blocks.patch_rows.numel():
        pick = torch.linspace(0, blocks.patch_rows.numel() - 1, steps=min(blocks.patch_rows.numel(),
                                                                          CHECK_ROWS // 2), device=blocks.device)
        parts.append(blocks.patch_rows[pick.long()])
    return torch.unique(torch.cat(parts))


def check_blocks_at_rows(blocks: TaskBlocks, grads_out: list, head_calls) -> str | None:
    """Compare the sparse per-task gradients with autograd through the head layers themselves at a few rows
    (:func:`check_rows`): for every task, the layers' own backward of the gradient at their outputs
    (``grads_out[task][layer]``), at those rows, in float64. Independent of how
    :mod:`~graddrop_mtl.engine.linear_heads` maps and stores them; costs a few rows."""
    rows = check_rows(blocks)
    outs = [out for _, _, out in head_calls]
    per_sample = blocks.n_rows // blocks.shape[0] if blocks.channel_dim == 1 else None
    for i, g_outs in enumerate(grads_out):
        expected = torch.zeros(rows.numel(), blocks.n_channels, dtype=torch.float64, device=blocks.device)
        for (layer, _, out), g in zip(head_calls, g_outs):
            if g is None:
                continue
            if blocks.channel_dim == 1:
                g_rows = g.reshape(g.shape[0], g.shape[1], -1)[rows // per_sample, :, rows % per_sample]
            else:
                g_rows = g.reshape(-1, g.shape[-1])[rows]
            x = torch.zeros(rows.numel(), blocks.n_channels, dtype=torch.float64, device=blocks.device,
                            requires_grad=True)
            weight = layer.weight.detach().double()
            if isinstance(layer, nn.Linear):
                y = torch.nn.functional.linear(x, weight)
            else:
                spatial = (1,) * (weight.dim() - 2)
                y = layer._conv_forward(x.reshape(*x.shape, *spatial), weight, None).reshape(rows.numel(), -1)
            (gx,) = torch.autograd.grad(y, x, g_rows.double())
            expected += gx
        got = _rows_of_task(blocks, i, rows).double()
        scale = float(expected.abs().nan_to_num(posinf=0, neginf=0).max().clamp_min(1e-30))
        tol = _tolerance(outs[0]) if blocks.dtype == torch.float32 else 5e-2
        if not torch.allclose(got, expected, rtol=tol, atol=tol * 0.1 * scale, equal_nan=True):
            return f'task {i} differs from autograd through the layers at rows {rows.tolist()[:8]}...'
    return None
