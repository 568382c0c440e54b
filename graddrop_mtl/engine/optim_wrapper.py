"""``MultiTaskOptimWrapper``: an mmengine ``OptimWrapper`` that applies a multitask gradient method at a shared
activation, with one backward pass through the trunk.

How a training step runs (mmengine's stock ``BaseModel.train_step`` / ``MMDistributedDataParallel.train_step``)::

    with optim_wrapper.optim_context(model):     # hooks armed: the shared module hands the heads a detached copy
        losses = model(**data, mode='loss')      #   of its output; the model's loss dict is captured
    parsed, log_vars = model.parse_losses(losses)
    optim_wrapper.update_params(parsed)          # per-task grads at the copy -> method.combine -> ONE backward

``update_params`` ignores the summed loss it is handed and works from the captured loss dict:

1. task losses ``L_i`` from the ``loss*`` keys (or the ``tasks`` grouping), each summed/averaged as mmengine's
   ``parse_losses`` does;
2. per-task gradients ``G_i = dL_i/dA`` at the detached copy ``A`` (one vectorised ``autograd.grad`` call with
   ``is_grads_batched=True``, a loop, or through the linear head layers; ``grad_mode='auto'`` decides on the
   first step by rules, see :mod:`~graddrop_mtl.engine.task_grads`). Through 1x1-convolution or ``Linear`` heads
   they stay sparse (:class:`~graddrop_mtl.methods.blocks.TaskBlocks`): a task that is non-zero at few positions is kept only there;
3. ``g = method.combine(G, activation=A, losses=L, generator=...)`` (``method.combine_blocks`` for blocks). ``Sum``
   skips 2 and 3 between statistics steps: it takes the gradient of the summed loss alone;
4. one ``torch.autograd.backward`` of ``[A_original, sum_i w_i L_i]`` with gradients ``[g, 1]`` into the model's
   parameters: the trunk gets ``g``, the heads get the gradient of the (method-weighted) task losses. Under DDP this
   is the single backward DDP expects, so gradients are reduced as usual; then ``clip_grad`` and
   ``optimizer.step`` as in mmengine.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import Tensor, nn

from ..methods import Method, build_method
from ..methods.base import sq_norms
from ..methods.blocks import TaskBlocks
from .linear_heads import LINEAR_TYPES
from .task_grads import GRAD_MODES, TaskGradients

#: ``task_grad_precision`` values per device type: PyTorch's ``fp32_precision`` settings of the float32 matmuls
#: (``torch.backends.mkldnn.matmul`` on the CPU, ``torch.backends.cuda.matmul`` on CUDA).
TASK_GRAD_PRECISIONS = {'cpu': ('ieee', 'tf32', 'bf16'), 'cuda': ('ieee', 'tf32')}


def precision_for(device_type: str, precision: str | Mapping[str, str] | None) -> str | None:
    """The ``task_grad_precision`` for ``device_type``: the string itself, or its entry in a per-device dict
    (``None`` when the dict has none)."""
    if isinstance(precision, Mapping):
        return precision.get(device_type)
    return precision


def check_precision(precision: str | Mapping[str, str] | None) -> None:
    """Raise a ``ValueError`` naming the value when ``precision`` is not a valid ``task_grad_precision``."""
    if precision is None:
        return
    if isinstance(precision, str):
        known = sorted({p for ps in TASK_GRAD_PRECISIONS.values() for p in ps})
        if precision not in known:
            raise ValueError(f'task_grad_precision must be None, one of {known} or a dict device type -> precision, '
                             f'got {precision!r}')
        return
    if not isinstance(precision, Mapping):
        raise TypeError(f'task_grad_precision must be None, a string or a dict, got {type(precision).__name__}')
    for device_type, value in precision.items():
        allowed = TASK_GRAD_PRECISIONS.get(device_type)
        if allowed is None:
            raise ValueError(f'task_grad_precision: unknown device type {device_type!r}; expected one of '
                             f'{sorted(TASK_GRAD_PRECISIONS)}')
        if value is not None and value not in allowed:
            raise ValueError(f'task_grad_precision[{device_type!r}]={value!r}: expected None or one of {allowed}')


@contextmanager
def fp32_matmul_precision(device_type: str, precision: str | Mapping[str, str] | None):
    """Run the float32 matmuls of the block at ``precision`` (PyTorch's ``fp32_precision`` of the device's matmul
    backend: ``'ieee'`` exact, ``'tf32'``, ``'bf16'``: inputs rounded to bfloat16, products accumulated and returned
    in float32), and put the previous setting back. ``None``: leave it as it is. A dict gives one precision per
    device type (``dict(cpu='bf16', cuda='tf32')``)."""
    precision = precision_for(device_type, precision)
    if precision is None:
        yield
        return
    allowed = TASK_GRAD_PRECISIONS.get(device_type)
    if allowed is None or precision not in allowed:
        raise ValueError(f'task_grad_precision={precision!r} is not available on {device_type!r}; expected None or '
                         f'one of {allowed or ()} (a dict sets one per device type)')
    backend = torch.backends.mkldnn.matmul if device_type == 'cpu' else torch.backends.cuda.matmul
    previous = backend.fp32_precision
    backend.fp32_precision = precision
    try:
        yield
    finally:
        backend.fp32_precision = previous


@dataclass
class _Capture:
    originals: list[Tensor] = field(default_factory=list)   # the shared module's real outputs (trunk graph)
    detached: list[Tensor] = field(default_factory=list)    # the leaf copies the heads consumed
    losses: Mapping[str, Any] | None = None
    head_calls: list[tuple[nn.Module, int, Tensor]] = field(default_factory=list)  # (linear head, act index, out)


@dataclass
class TaskSpec:
    name: str
    keys: list[str]
    weight: float = 1.0


@OPTIM_WRAPPERS.register_module()
class MultiTaskOptimWrapper(OptimWrapper):
    """Optimizer wrapper applying a multitask gradient method (GradDrop, PCGrad, MGDA, ...) at a shared activation.

    Example::

        optim_wrapper = dict(
            type='MultiTaskOptimWrapper',
            optimizer=dict(type='Adam', lr=1.5e-3, betas=(0.9, 0.999)),
            clip_grad=dict(max_norm=10, norm_type=2),
            method=dict(type='GradDrop', k=1.0, leak=0.0),
            shared='pts_neck')

    Args:
        optimizer: as for ``OptimWrapper``.
        method: a multitask method config (``dict(type='GradDrop', ...)``, see :mod:`graddrop_mtl.methods`) or
            instance. Default: ``Sum`` (identical to plain training).
        shared: dotted path of the module whose output is the shared activation, e.g. ``'pts_neck'`` or
            ``'backbone.features'``. Its output may be a Tensor or a list/tuple of Tensors; the module may be called
            several times per forward (every output is a shared activation).
        tasks: ``None``: one task per ``loss*`` key of the model's loss dict (a list-valued loss is summed). A list
            of keys: one task each, in that order. A dict ``name -> key | [keys] | dict(keys=[...], weight=w)``
            groups keys into tasks with static weights.
        grad_mode: ``'batched'`` (one ``autograd.grad`` call with ``is_grads_batched=True``), ``'loop'`` (one call
            per task), ``'linear'`` (see ``linear_heads``) or ``'auto'``: decided on the first step by rules, not
            by timing, and logged with the reason (:mod:`graddrop_mtl.engine.task_grads`): ``'linear'`` when only
            linear layers read the activation (checked on the autograd graph, then against autograd at a few rows),
            else ``'batched'`` if it agrees with the loop, else ``'loop'``; a dense ``[T, *A.shape]`` stack only
            when it fits a share of the available memory, otherwise an error that says what to set.
        linear_heads: dotted paths of the linear layers (``Conv*d``/``Linear``) that consume the shared activation,
            e.g. the three 1x1 convolutions of mmdet3d's ``Anchor3DHead``. With them the per-task gradients are taken
            at these layers' outputs (a backward through the small loss graph only) and mapped back to the
            activation through the layers' weights, restricted to the output channels each task uses. When every
            listed layer is a 1x1 convolution (or every one a ``Linear``) the mapping is row by row and the
            gradients stay sparse (:class:`~graddrop_mtl.methods.blocks.TaskBlocks`): PointPillars' seven box losses
            and its direction loss are non-zero only at the positions of positive anchors, so the nine tasks cost
            about one dense gradient (classification) instead of nine. Every consumer of the activation must be
            listed (checked on the first step). Without ``linear_heads``, ``'auto'`` finds the 1x1 convolutions /
            ``Linear`` layers that read the activation itself and uses them when the activation is large.
        problem_dims: leading dims of the activation that index independent problems (replicas), see
            :mod:`graddrop_mtl.methods.base`. Task losses then carry those dims too.
        problem_rng: give every problem its own random stream, seeded from ``seed`` and its id, so that a replica
            run alone (``problem_ids=[r]``) draws exactly what it draws among all replicas.
        problem_ids: ids of the problems for ``problem_rng`` (default ``0..P-1``).
        seed: seed of the method's random stream. Default: drawn from the global RNG when the wrapper is built
            (the Runner has seeded it from ``randomness.seed``), plus the rank.
        stats_interval: compute the method's statistics (sign purity, conflict and kept fractions) every this many
            steps (the logged values hold in between). Per-task gradient norms and weights are logged every step,
            except with ``Sum``, which computes per-task gradients only on these steps.
        log_per_task: log per-task gradient norms, weights and kept fractions (one scalar each).
        amp: mixed precision (what ``tools/train.py --amp`` sets): ``True`` or ``dict(dtype=..., loss_scale=...)``.
            The forward runs under ``torch.autocast`` in ``dtype`` (default ``'float16'`` on CUDA, ``'bfloat16'``
            on the CPU; ``None``: no autocast). ``loss_scale``: ``'dynamic'`` (default for float16; a
            ``torch.amp.GradScaler``), a number (static), a dict of ``GradScaler`` arguments, or ``None`` (default
            for bfloat16). The task losses are scaled before the per-task gradients are taken, which are unscaled
            (to float32) before the method combines them; the trunk and head gradients are scaled again for the
            one backward and unscaled before ``clip_grad`` and the step. A non-finite per-task gradient under
            dynamic scaling is an overflow: the step is skipped and the scale lowered, as ``GradScaler`` does.
        task_grad_precision: precision of the float32 matmuls while the per-task gradients are taken (PyTorch's
            ``fp32_precision``). ``None`` (default) leaves the global setting, exact unless changed. ``'bf16'``
            (CPU) rounds the matmul inputs to bfloat16 and accumulates in float32, which CPUs with AMX run several
            times faster; ``'tf32'`` (CUDA, Ampere and later). A dict sets one per device type, e.g.
            ``dict(cpu='bf16', cuda='tf32')``; a device type it does not name keeps the global setting. Only this
            pass changes: the one backward through the trunk and the heads stays in float32. The per-task
            gradients, and what the method builds from them, carry the rounding: on the CelebA benchmark batch
            ``'bf16'`` puts each task's largest error at 4e-3 (median; 7e-3 at most) of its largest value
            (``tools/analysis/benchmark_mtl.py --task-grad-precision bf16`` prints it). There the 40 per-task
            gradients through the first dense layer are the largest extra cost of every exact method (the
            ``(floor)`` row); ``'bf16'`` takes them in about half the time.
        **kwargs: ``accumulative_counts``, ``clip_grad`` as for ``OptimWrapper``.
    """

    def __init__(self, optimizer, method: Method | Mapping[str, Any] | None = None, shared: str | None = None,
                 tasks: Sequence[str] | Mapping[str, Any] | None = None, grad_mode: str = 'auto',
                 problem_dims: int = 0, problem_rng: bool = False, problem_ids: Sequence[int] | None = None,
                 seed: int | None = None, stats_interval: int = 1, log_per_task: bool = True,
                 linear_heads: Sequence[str] | None = None, amp: bool | Mapping[str, Any] = False,
                 task_grad_precision: str | Mapping[str, str] | None = None, **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        self.amp_dtype, self.loss_scaler = self._parse_amp(amp)
        if not shared or not isinstance(shared, str):
            raise ValueError('MultiTaskOptimWrapper needs shared="<dotted.module.path>", the module whose output is '
                             'the shared activation (e.g. shared="pts_neck")')
        self.method: Method = build_method(method if method is not None else dict(type='Sum'))
        self.shared = shared
        self.task_specs = self._parse_tasks(tasks)
        check_precision(task_grad_precision)
        self.task_grad_precision = task_grad_precision
        self.linear_heads = list(linear_heads) if linear_heads else []
        if grad_mode == 'linear' and not self.linear_heads:
            raise ValueError("grad_mode='linear' needs linear_heads=[...] (the linear layers on the shared activation)")
        self.problem_dims = int(problem_dims)
        self._task_grads = TaskGradients(grad_mode, linear_heads=self.linear_heads,
                                         problem_dims=self.problem_dims)
        self.stats_interval = max(1, int(stats_interval))
        self.log_per_task = log_per_task
        # Random stream of the method: seeded from the (already seeded) global RNG and the rank.
        base = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        self.seed = base + 1_000_003 * get_rank()
        self.problem_rng = problem_rng
        self.problem_ids = list(problem_ids) if problem_ids is not None else None
        self.generator: torch.Generator | list[torch.Generator] | None = None
        self._generator_state: Any = None
        self.skipped_steps = 0
        self._steps = 0
        self._model: nn.Module | None = None
        self._capture: _Capture | None = None
        self._capturing = False
        self._hooks: list[Any] = []

    # ------------------------------------------------------------------------------------------------ set-up
    def _parse_amp(self, amp) -> tuple[torch.dtype | None, Any]:
        if not amp:
            return None, None
        cfg = {} if amp is True else dict(amp)
        unknown = set(cfg) - {'dtype', 'loss_scale'}
        if unknown:
            raise ValueError(f'amp: unknown keys {sorted(unknown)}; expected dtype=..., loss_scale=...')
        params = [p for group in self.optimizer.param_groups for p in group['params']]
        device = params[0].device.type if params else 'cpu'
        self._amp_device = device
        dtype_name = cfg.get('dtype', 'float16' if device == 'cuda' else 'bfloat16')
        dtypes = {'float16': torch.float16, 'bfloat16': torch.bfloat16, None: None}
        if dtype_name not in dtypes:
            raise ValueError(f"amp dtype must be 'float16', 'bfloat16' or None, got {dtype_name!r}")
        dtype = dtypes[dtype_name]
        scale = cfg.get('loss_scale', 'dynamic' if dtype is torch.float16 else None)
        if scale is None:
            return dtype, None
        if scale == 'dynamic':
            return dtype, torch.amp.GradScaler(device)
        if isinstance(scale, (int, float)):
            return dtype, torch.amp.GradScaler(device, init_scale=float(scale), growth_interval=2**62)
        if isinstance(scale, Mapping):
            return dtype, torch.amp.GradScaler(device, **scale)
        raise ValueError(f"amp loss_scale must be 'dynamic', a number, a dict or None, got {scale!r}")

    @staticmethod
    def _parse_tasks(tasks) -> list[TaskSpec] | None:
        if tasks is None:
            return None
        if isinstance(tasks, str):
            raise TypeError(f'tasks must be a list or dict of loss keys, got the string {tasks!r}')
        specs = []
        if isinstance(tasks, Mapping):
            for name, spec in tasks.items():
                if isinstance(spec, str):
                    specs.append(TaskSpec(name, [spec]))
                elif isinstance(spec, Mapping):
                    unknown = set(spec) - {'keys', 'weight'}
                    if unknown or 'keys' not in spec:
                        raise ValueError(f'task {name!r}: expected dict(keys=[...], weight=...), got {dict(spec)}')
                    keys = [spec['keys']] if isinstance(spec['keys'], str) else list(spec['keys'])
                    specs.append(TaskSpec(name, keys, float(spec.get('weight', 1.0))))
                else:
                    specs.append(TaskSpec(name, list(spec)))
        else:
            specs = [TaskSpec(k, [k]) for k in tasks]
        seen: dict[str, str] = {}
        for s in specs:
            if not s.keys:
                raise ValueError(f'task {s.name!r} has no loss keys')
            for k in s.keys:
                if k in seen:
                    raise ValueError(f'loss key {k!r} is in tasks {seen[k]!r} and {s.name!r}')
                seen[k] = s.name
        return specs

    @staticmethod
    def _resolve(module: nn.Module, path: str, what: str) -> nn.Module:
        try:
            return module.get_submodule(path)
        except AttributeError:
            parent, found = module, []
            for part in path.split('.'):
                if not hasattr(parent, part) or not isinstance(getattr(parent, part), nn.Module):
                    break
                parent = getattr(parent, part)
                found.append(part)
            where = '.'.join(found) or type(module).__name__
            children = [n for n, _ in parent.named_children()]
            raise ValueError(f'{what}={path!r}: the model ({type(module).__name__}) has no such module; '
                             f'the modules under {where!r} are {children}') from None

    def _attach(self, model: nn.Module) -> None:
        module = model.module if is_model_wrapper(model) else model
        if self._model is module:
            return
        for h in self._hooks:
            h.remove()
        shared = self._resolve(module, self.shared, 'shared')
        heads = []
        for path in self.linear_heads:
            head = self._resolve(module, path, 'linear_heads')
            if not isinstance(head, LINEAR_TYPES):
                raise TypeError(f'linear_heads: {path!r} is a {type(head).__name__}; only '
                                f'{[t.__name__ for t in LINEAR_TYPES]} can be mapped back linearly')
            heads.append(head)
        self._model = module
        self._hooks = [shared.register_forward_hook(self._shared_hook),
                       module.register_forward_hook(self._loss_hook)]
        self._hooks += [h.register_forward_hook(self._linear_head_hook)
                        for h in self._task_grads.hook_targets(module, heads)]

    def _shared_hook(self, module: nn.Module, args, output):
        if not self._capturing or not torch.is_grad_enabled():
            return None
        cap = self._capture

        def detach(t):
            if isinstance(t, Tensor):
                if not t.requires_grad:
                    raise RuntimeError(
                        f'the shared activation (output of {self.shared!r}, {type(module).__name__}) does not require '
                        'grad: the trunk below it is frozen or runs under no_grad, so there is nothing to combine')
                copy = t.detach().requires_grad_(True)
                cap.originals.append(t)
                cap.detached.append(copy)
                return copy
            if isinstance(t, (list, tuple)):
                return type(t)(detach(x) for x in t)
            raise TypeError(f'the output of the shared module {self.shared!r} must be a Tensor or a list/tuple of '
                            f'Tensors, got {type(t).__name__}')

        return detach(output)

    def _linear_head_hook(self, module: nn.Module, args, output):
        if not self._capturing or not torch.is_grad_enabled() or not args:
            return None
        for j, act in enumerate(self._capture.detached):
            if args[0] is act:
                self._capture.head_calls.append((module, j, output))
                break
        return None

    def _loss_hook(self, module: nn.Module, args, output):
        if self._capturing and isinstance(output, Mapping):
            self._capture.losses = output
        return None

    @contextmanager
    def optim_context(self, model: nn.Module):
        self._attach(model)
        self._capture = _Capture()
        self._capturing = True
        try:
            with super().optim_context(model):
                if self.amp_dtype is None:
                    yield
                else:
                    with torch.autocast(device_type=self._amp_device, dtype=self.amp_dtype):
                        yield
        finally:
            self._capturing = False

    # ------------------------------------------------------------------------------------------------ the step
    def _task_losses(self, losses: Mapping[str, Any]) -> tuple[list[str], list[Tensor]]:
        def reduce(key: str) -> Tensor:
            value = losses[key]
            if self.problem_dims:
                parts = value if isinstance(value, (list, tuple)) else [value]
                return sum(parts[1:], parts[0])
            if isinstance(value, Tensor):
                return value.mean()
            if isinstance(value, (list, tuple)):
                return sum(v.mean() for v in value)
            raise TypeError(f'loss {key!r} is a {type(value).__name__}; expected a Tensor or a list of Tensors')

        loss_keys = [k for k in losses if 'loss' in k]
        if self.task_specs is None:
            if not loss_keys:
                raise KeyError(f'the model returned no loss* keys; its output has {list(losses)}')
            return loss_keys, [reduce(k) for k in loss_keys]
        missing = [k for s in self.task_specs for k in s.keys if k not in losses]
        if missing:
            raise KeyError(f'tasks name loss keys {missing} that the model does not return; it returns '
                           f'{list(losses)}')
        assigned = {k for s in self.task_specs for k in s.keys}
        unassigned = [k for k in loss_keys if k not in assigned]
        if unassigned:
            raise KeyError(f'loss keys {unassigned} belong to no task; add them to `tasks` '
                           f'(tasks: {[s.name for s in self.task_specs]})')
        names, values = [], []
        for s in self.task_specs:
            total = sum((reduce(k) for k in s.keys[1:]), reduce(s.keys[0]))
            names.append(s.name)
            values.append(total * s.weight if s.weight != 1.0 else total)
        return names, values

    def _per_task_grads(self, task_losses: list[Tensor], acts: list[Tensor],
                        head_calls: list) -> list[Tensor] | TaskBlocks:
        with fp32_matmul_precision(acts[0].device.type, self.task_grad_precision):
            return self._task_grads(task_losses, acts, head_calls)

    def _grads(self, mode: str, task_losses, acts, head_calls) -> list[Tensor] | TaskBlocks:
        return self._task_grads.compute(mode, task_losses, acts, head_calls)

    def _grads_linear(self, task_losses, acts, head_calls) -> list[Tensor] | TaskBlocks:
        return self._task_grads.linear(task_losses, acts, head_calls)

    _grads_loop = staticmethod(TaskGradients.loop)
    _grads_batched = staticmethod(TaskGradients.batched)

    def _choose_grad_mode(self, task_losses, acts, head_calls) -> str:
        return self._task_grads.choose(task_losses, acts, head_calls)

    @property
    def grad_mode(self) -> str:
        """The per-task gradient mode (``'auto'`` until the first step has chosen one)."""
        return self._task_grads.mode

    @grad_mode.setter
    def grad_mode(self, mode: str) -> None:
        if mode not in GRAD_MODES:
            raise ValueError(f'grad_mode must be one of {GRAD_MODES}, got {mode!r}')
        self._task_grads.mode = mode

    def _flatten(self, grads: list[Tensor], acts: list[Tensor]) -> tuple[Tensor, Tensor]:
        if len(acts) == 1:
            return grads[0], acts[0].detach()
        lead = 1 + self.problem_dims   # keep the problem dims and the batch dim, flatten the rest
        heads = {tuple(a.shape[:lead]) for a in acts}
        if len(heads) != 1:
            return (torch.cat([g.flatten(1) for g in grads], 1), torch.cat([a.detach().flatten() for a in acts]))
        return (torch.cat([g.flatten(lead + 1) for g in grads], -1),
                torch.cat([a.detach().flatten(lead) for a in acts], -1))

    @staticmethod
    def _unflatten(flat: Tensor, acts: list[Tensor]) -> list[Tensor]:
        if len(acts) == 1:
            return [flat]
        if flat.dim() == 1:
            sizes = [a.numel() for a in acts]
            return [p.reshape(a.shape) for p, a in zip(flat.split(sizes), acts)]
        sizes = [a[(0,) * (flat.dim() - 1)].numel() for a in acts]
        return [p.reshape(a.shape) for p, a in zip(flat.split(sizes, -1), acts)]

    def _get_generator(self, activation: Tensor):
        device = activation.device
        if self.generator is None:
            if self.problem_rng:
                n_problems = int(torch.Size(activation.shape[:self.problem_dims]).numel())
                ids = self.problem_ids if self.problem_ids is not None else list(range(n_problems))
                if len(ids) != n_problems:
                    raise ValueError(f'problem_ids has {len(ids)} ids but the activation holds {n_problems} problems')
                self.generator = [torch.Generator(device=device).manual_seed(self.seed * 100_003 + int(i))
                                  for i in ids]
            else:
                self.generator = torch.Generator(device=device).manual_seed(self.seed)
            if self._generator_state is not None:
                states = self._generator_state if isinstance(self._generator_state, list) else [self._generator_state]
                for gen, st in zip(self.generator if isinstance(self.generator, list) else [self.generator], states):
                    gen.set_state(st)
                self._generator_state = None
        return self.generator

    @staticmethod
    def _task_norms(grads: list[Tensor]) -> Tensor:
        """Per-task L2 norms over all shared activations (non-finite iff a gradient holds inf or nan)."""
        return sum(sq_norms(g.detach().reshape(g.shape[0], -1)) for g in grads).sqrt()

    def _all_finite(self, norms: Tensor, losses: Tensor) -> bool:
        finite = bool(torch.isfinite(norms).all()) and bool(torch.isfinite(losses).all())
        if torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
            flag = torch.tensor([0.0 if finite else 1.0], device=losses.device)
            torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
            finite = bool(flag.item() == 0.0)
        return finite

    def update_params(self, loss: Tensor, step_kwargs: dict | None = None,
                      zero_kwargs: dict | None = None) -> None:
        cap, self._capture = self._capture, None
        if cap is None or cap.losses is None or not cap.detached:
            what = ('the model forward did not run inside optim_wrapper.optim_context(model)' if cap is None else
                    f'the shared module {self.shared!r} was not called in the forward' if not cap.detached else
                    'the model forward returned no loss dict')
            raise RuntimeError(f'MultiTaskOptimWrapper.update_params: {what}. Use the stock train_step '
                               '(BaseModel / MMDistributedDataParallel) or wrap the forward in optim_context.')
        names, task_losses = self._task_losses(cap.losses)
        acts = cap.detached
        loss_values = torch.stack([v.detach().float() for v in task_losses])
        stats_step = self._steps % self.stats_interval == 0
        amp_scale = 1.0
        if self.loss_scaler is not None:   # (scale() also creates the scaler's state on the losses' device)
            amp_scale = float(self.loss_scaler.scale(torch.ones((), device=loss_values.device)))
        grad_losses = task_losses if amp_scale == 1.0 else [v * amp_scale for v in task_losses]
        if self.method.needs_task_grads or (self.log_per_task and stats_step) or self.grad_mode == 'auto':
            grads = self._unscale(self._per_task_grads(grad_losses, acts, cap.head_calls), amp_scale)
            norms = grads.sq_norms().sqrt() if isinstance(grads, TaskBlocks) else self._task_norms(grads)
        else:
            # The trunk gets the plain sum (Sum): the gradient of the summed loss, taken as one task.
            grads = None
            total = self._unscale(self._grads('loop' if self.grad_mode == 'batched' else self.grad_mode,
                                              [sum(v.sum() for v in grad_losses)], acts, cap.head_calls), amp_scale)
            if isinstance(total, TaskBlocks):
                summed = [total.base[0] if total.patch is None and total.base is not None else
                          total.linear_combination()]
                norms = total.sq_norms().sqrt()
            else:
                summed = [g[0] for g in total]
                norms = self._task_norms(total)
        if not self._all_finite(norms, loss_values):
            if self.loss_scaler is not None and bool(torch.isfinite(loss_values).all()):
                # an overflow of the scaled gradients: lower the scale, skip the step (as GradScaler does)
                self.loss_scaler.update(amp_scale * self.loss_scaler.get_backoff_factor())
                print_log(f'MultiTaskOptimWrapper: scaled gradients overflowed, step skipped, loss scale '
                          f'{amp_scale:g} -> {self.loss_scaler.get_scale():g}', logger='current')
                self._discard_step()
                return
            self._skip_step(names, norms if grads is not None else None, loss_values)
            return
        self._steps += 1
        if hasattr(self.method, 'collect_stats'):
            self.method.collect_stats = stats_step
        if grads is None:
            trunk_grads = list(summed)
        elif isinstance(grads, TaskBlocks):
            trunk_grads = [self.method.combine_blocks(grads, activation=acts[0].detach(), losses=loss_values,
                                                      generator=self._get_generator(acts[0]))]
        else:
            flat, activation = self._flatten(grads, acts)
            combined = self.method.combine(flat, activation=activation, losses=loss_values,
                                           generator=self._get_generator(activation), problem_dims=self.problem_dims)
            trunk_grads = self._unflatten(combined, acts)
            del flat, activation, combined
        per_task = grads is not None
        # the per-task gradients are combined: free them before the backward, where the step's memory peaks (at
        # full size their dense part is as large as the shared activation)
        del grads
        weights = self.method.task_weights if per_task else None
        if weights is None:
            head_loss = sum(v.sum() for v in task_losses)
        else:
            head_loss = sum((w * v).sum() for w, v in zip(weights.to(loss_values.dtype), task_losses))
        if self.method.create_graph:
            # The penalty needs only the gradient of the summed loss, with its graph (one double backward), not
            # T per-task gradients with graphs.
            total = torch.autograd.grad(sum(v.sum() for v in task_losses), acts, retain_graph=True, create_graph=True,
                                        allow_unused=True, materialize_grads=True)
            penalty = self.method.penalty(self._flatten([t.unsqueeze(0) for t in total], acts)[0])
            pen_grads = torch.autograd.grad(penalty, acts, retain_graph=True, allow_unused=True,
                                            materialize_grads=True)
            trunk_grads = [g.detach() + p for g, p in zip(trunk_grads, pen_grads)]
            head_loss = head_loss + penalty
        scale = float(self.scale_loss(torch.ones((), dtype=loss_values.dtype, device=loss_values.device)))
        scale *= amp_scale
        if scale != 1.0:
            trunk_grads = [g * scale for g in trunk_grads]
            head_loss = head_loss * scale
        trunk_grads = [g.to(a.dtype) for g, a in zip(trunk_grads, cap.originals)]
        # ONE backward: the combined gradient into the trunk, the task losses through the heads. Only into the
        # parameters: the heads' gradient at the detached copy of the activation is not needed any more.
        params = [p for p in self._model.parameters() if p.requires_grad]
        torch.autograd.backward(list(cap.originals) + [head_loss], [g.detach() for g in trunk_grads] + [None],
                                inputs=params)
        self._inner_count += 1
        self._log(names, norms if per_task else None, weights)
        if self.should_update():
            self.step(**(step_kwargs or {}))
            self.zero_grad(**(zero_kwargs or {}))

    @staticmethod
    def _unscale(grads: list[Tensor] | TaskBlocks, amp_scale: float) -> list[Tensor] | TaskBlocks:
        """Per-task gradients of the scaled (mixed-precision) losses -> float32 gradients of the losses."""
        low = (torch.float16, torch.bfloat16)
        if isinstance(grads, TaskBlocks):
            if amp_scale == 1.0 and grads.dtype not in low:
                return grads
            return grads.scaled(torch.full((grads.n_tasks,), 1.0 / amp_scale, device=grads.device),
                                dtype=torch.float32)
        if amp_scale == 1.0:
            return [g.float() if g.dtype in low else g for g in grads]
        return [g.float() / amp_scale for g in grads]

    def step(self, **kwargs) -> None:
        """``clip_grad`` and ``optimizer.step``; with a loss scaler the gradients are unscaled first and the step
        goes through the scaler (skipped if a parameter gradient is not finite), which then updates the scale."""
        if self.loss_scaler is None:
            return super().step(**kwargs)
        self.loss_scaler.unscale_(self.optimizer)
        if self.clip_grad_kwargs:
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update()

    def _skip_step(self, names, norms: Tensor | None, loss_values: Tensor) -> None:
        bad = [n for i, n in enumerate(names)
               if not (bool(torch.isfinite(loss_values[i]).all()) and (norms is None or bool(torch.isfinite(norms[i]))))]
        if not bad and norms is None:
            bad = 'the summed gradient'   # only the sum was computed (Sum between statistics steps)
        self.skipped_steps += 1
        warnings.warn(f'MultiTaskOptimWrapper: non-finite loss or gradient at the shared activation for tasks '
                      f'{bad or "(on another rank)"}; step skipped, nothing updated '
                      f'({self.skipped_steps} skipped so far)')
        self._discard_step()
        self.message_hub.update_scalar('train/mtl/skipped_steps', self.skipped_steps)

    def _discard_step(self) -> None:
        """Count the iteration (for gradient accumulation) without updating anything."""
        self._inner_count += 1
        self.zero_grad()

    def _log(self, names, norms: Tensor, weights: Tensor | None) -> None:
        hub = self.message_hub
        stats = self.method.last_stats()
        for key, value in stats.items():
            if key.startswith('kept_frac_'):
                if self.log_per_task:
                    hub.update_scalar(f'train/mtl/kept/{names[int(key[10:])]}', value)
            else:
                hub.update_scalar(f'train/mtl/{key}', value)
        hub.update_scalar('train/mtl/skipped_steps', self.skipped_steps)
        if self.log_per_task and norms is not None:
            norms = norms.tolist()
            w = weights.reshape(len(names), -1).mean(1).tolist() if weights is not None else None
            for i, name in enumerate(names):
                hub.update_scalar(f'train/mtl/grad_norm/{name}', norms[i])
                if w is not None:
                    hub.update_scalar(f'train/mtl/weight/{name}', w[i])

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = super().state_dict()
        if isinstance(self.generator, list):
            gen = [g.get_state() for g in self.generator]
        else:
            gen = self.generator.get_state() if self.generator is not None else self._generator_state
        state['mtl'] = dict(method=self.method.state_dict(), generator=gen, seed=self.seed,
                            skipped_steps=self.skipped_steps, steps=self._steps, grad_mode=self.grad_mode)
        if self.loss_scaler is not None:
            state['loss_scaler'] = self.loss_scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        mtl = state_dict.pop('mtl', None)
        scaler_state = state_dict.pop('loss_scaler', None)
        if scaler_state is not None and self.loss_scaler is not None:
            self.loss_scaler.load_state_dict(scaler_state)
        super().load_state_dict(state_dict)
        if mtl is None:
            return
        self.method.load_state_dict(mtl.get('method') or {})
        self.seed = mtl.get('seed', self.seed)
        self.skipped_steps = mtl.get('skipped_steps', 0)
        self._steps = mtl.get('steps', 0)
        if mtl.get('grad_mode') in GRAD_MODES:
            self.grad_mode = mtl['grad_mode']
        self.generator = None
        self._generator_state = mtl.get('generator')

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(method={self.method!r}, shared={self.shared!r}, '
                f'tasks={[s.name for s in self.task_specs] if self.task_specs else "loss* keys"})')

