"""``MultiTaskOptimWrapper``: an mmengine ``OptimWrapper`` that applies a multitask gradient method at a shared
activation, with one backward pass through the trunk.

How a training step runs (mmengine's stock ``BaseModel.train_step`` / ``MMDistributedDataParallel.train_step``)::

    with optim_wrapper.optim_context(model):     # hooks armed: the shared module hands the heads a detached copy
        losses = model(**data, mode='loss')      #   of its output; the model's loss dict is captured
    parsed, log_vars = model.parse_losses(losses)
    optim_wrapper.update_params(parsed)          # per-task grads at the copy -> method.combine -> ONE backward

``update_params`` ignores the summed loss it is handed and works from the captured loss dict:

1. task losses ``L_i`` from the ``loss*`` keys (or the ``tasks`` grouping), each summed/averaged as mmengine's
   ``parse_losses`` does (:mod:`.tasks`);
2. per-task gradients ``G_i = dL_i/dA`` at the detached copy ``A`` (:mod:`.task_grads`: one vectorised
   ``autograd.grad`` call, a loop, or through the linear head layers, where they may stay sparse as
   :class:`~graddrop_mtl.methods.blocks.TaskBlocks`; ``grad_mode='auto'`` decides on the first step by rules).
   ``Sum`` skips 2 and 4 between statistics steps: it takes the gradient of the summed loss alone. So do the loss
   weightings (``method.loss_only``: UW, DWA, RLW, ...): their weights ``w = method.weigh_losses(L)`` come first,
   from the losses alone and instead of ``combine``, and the trunk gets the gradient of ``sum_i w_i L_i`` taken as
   one task (``sum_i w_i G_i`` on the steps that take the per-task gradients anyway);
3. one decision on all ranks whether the step is taken (:mod:`.sync`; a non-finite loss or gradient anywhere skips
   it everywhere, and a skipped micro-step skips its whole accumulation window);
4. ``g = method.combine(G, activation=A, losses=L, generator=...)`` (:mod:`.combine`; the generator is the step's
   counter-based stream, :mod:`.streams`);
5. one ``torch.autograd.backward`` of ``[A_original, sum_i w_i L_i]`` with gradients ``[g, 1]`` into the model's
   parameters: the trunk gets ``g``, the heads get the gradient of the (method-weighted) task losses. Under DDP this
   is the single backward DDP expects, so the combined gradients are averaged over the ranks as usual; then
   ``clip_grad`` and ``optimizer.step`` as in mmengine (through the loss scaler with mixed precision, :mod:`.amp`).

Distributed semantics (``docs/distributed.md``): every rank takes the per-task gradients of its own local batch,
DDP averages the combined gradients, and the methods' statistics are summed over the ranks through
``Method.set_reducer`` so that stateful methods hold one state on all ranks.
"""
from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from typing import Any, Mapping, Sequence

import torch
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import Tensor, nn

from ..methods import Method, build_method
from ..methods.blocks import TaskBlocks
from . import combine as comb
from .amp import LossScaling
from .capture import ActivationCapture, Captured, check_trunk_isolated
from .mtl_log import log_step
from .precision import TASK_GRAD_PRECISIONS, check_precision, fp32_matmul_precision, precision_for  # noqa: F401
from .streams import StepStreams
from .sync import any_across_ranks, same_on_all_ranks, sum_across_ranks, world_size
from .task_grads import GRAD_MODES, TaskGradients
from .tasks import TaskSpec, parse_tasks, task_losses  # noqa: F401

_Capture = Captured   # the name the benchmark tools and older tests use


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
        seed: seed of the method's random stream, the same on every rank. The generator of a step is seeded from
            ``(seed, rank, step)`` (:mod:`.streams`): every rank draws its own numbers and a resumed run continues
            exactly, on every rank. Default: drawn from the global RNG when the wrapper is built (the Runner has
            seeded it from ``randomness.seed``), rank 0's draw on all ranks.
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
            one backward and unscaled before ``clip_grad`` and the step. A non-finite per-task gradient (with
            finite losses) on any rank is an overflow: every rank skips the step and lowers the scale, as
            ``GradScaler`` does; a non-finite parameter gradient is found by the scaler, all-reduced across ranks
            (:mod:`.amp`).
        task_grad_precision: precision of the float32 matmuls while the per-task gradients are taken (PyTorch's
            ``fp32_precision``). ``None`` (default) leaves the global setting, exact unless changed. ``'bf16'``
            (CPU) rounds the matmul inputs to bfloat16 and accumulates in float32, which CPUs with AMX run several
            times faster; ``'tf32'`` (CUDA, Ampere and later). A dict sets one per device type, e.g.
            ``dict(cpu='bf16', cuda='tf32')``; a device type it does not name keeps the global setting. Only this
            pass changes: the one backward through the trunk and the heads stays in float32. The per-task
            gradients, and what the method builds from them, carry the rounding
            (``tools/analysis/benchmark_mtl.py --task-grad-precision bf16`` prints its size and its speed-up).
        **kwargs: ``accumulative_counts``, ``clip_grad`` as for ``OptimWrapper``. A micro-step skipped for a
            non-finite loss or gradient skips its whole accumulation window (``GradScaler``'s semantics): the
            window's gradients are dropped and its remaining micro-steps only count.
    """

    def __init__(self, optimizer, method: Method | Mapping[str, Any] | None = None, shared: str | None = None,
                 tasks: Sequence[str] | Mapping[str, Any] | None = None, grad_mode: str = 'auto',
                 problem_dims: int = 0, problem_rng: bool = False, problem_ids: Sequence[int] | None = None,
                 seed: int | None = None, stats_interval: int = 1, log_per_task: bool = True,
                 linear_heads: Sequence[str] | None = None, amp: bool | Mapping[str, Any] = False,
                 task_grad_precision: str | Mapping[str, str] | None = None, **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        params = [p for group in self.optimizer.param_groups for p in group['params']]
        self.amp = LossScaling(amp, params[0].device.type if params else 'cpu')
        if not shared or not isinstance(shared, str):
            raise ValueError('MultiTaskOptimWrapper needs shared="<dotted.module.path>", the module whose output is '
                             'the shared activation (e.g. shared="pts_neck")')
        self.method: Method = build_method(method if method is not None else dict(type='Sum'))
        self._method_parameters()
        self.shared = shared
        self.task_specs = parse_tasks(tasks)
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
        self.seed = same_on_all_ranks(int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed))
        self.streams = StepStreams(get_rank(), problem_rng, problem_ids)
        self.skipped_steps = 0
        self._steps = 0                  # applied steps: the counter of the random stream
        self._window_skipped = False     # a micro-step of the current accumulation window was skipped
        self._checked = False            # the first applied step's structure checks are done
        self._capture_hooks = ActivationCapture(shared, self.linear_heads, self._task_grads.hook_targets)
        self._capture: Captured | None = None
        self._model: nn.Module | None = None

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The forward's autocast dtype (``None``: no autocast)."""
        return self.amp.dtype

    @property
    def loss_scaler(self) -> torch.amp.GradScaler | None:
        """The loss scaler (``None`` without dynamic or static loss scaling), as ``AmpOptimWrapper.loss_scaler``."""
        return self.amp.scaler

    @contextmanager
    def optim_context(self, model: nn.Module):
        self._model = self._capture_hooks.attach(model)
        with self._capture_hooks.capturing() as record, super().optim_context(model), self.amp.autocast():
            self._capture = record
            yield

    # ------------------------------------------------------------------------------------------------ the step
    def update_params(self, loss: Tensor, step_kwargs: dict | None = None,
                      zero_kwargs: dict | None = None) -> None:
        cap = self._take_capture()
        names, losses = self._task_losses(cap.losses)
        if self._window_skipped:                    # the rest of a window whose micro-step was skipped
            return self._skip_micro_step()
        self._connect_ranks()
        loss_values = torch.stack([v.detach().float() for v in losses])
        scale = self.amp.current_scale(loss_values.device)
        weights = before = None
        if self.method.loss_only:                   # a loss weighting: its weights first, see _weigh
            before = copy.deepcopy(self.method.state_dict())
            weights = self._weigh(cap, loss_values)
        grads, norms = self._gradients(losses, cap, scale, weights)
        per_task = not isinstance(grads, tuple)     # else only the (weighted) summed gradient was taken
        if not self._all_finite(names, norms, loss_values, per_task, weights):
            if before is not None:                  # a skipped step leaves the method as it was
                self.method.load_state_dict(before)
            return self._skip_micro_step()
        if weights is None:
            trunk_grads, weights = self._combine(grads, cap, loss_values)
        else:
            trunk_grads = comb.weighted_sum(grads, weights, cap.detached, self.problem_dims) if per_task \
                else list(grads)
        # combined: the per-task gradients are freed before the backward, where the step's memory peaks (at full
        # size their dense part is as large as the shared activation)
        grads = None
        heads = comb.head_loss(losses, weights, self.method.loss_term())
        if self.method.create_graph:
            trunk_grads, heads = comb.add_penalty(self.method, losses, cap.detached, trunk_grads, heads,
                                                  self.problem_dims)
        self._check_structure(cap, heads)
        self._backward(cap, trunk_grads, heads, scale)
        self._steps += 1
        self._inner_count += 1
        log_step(self.message_hub, self.method, names, norms if per_task else None, weights,
                 self.skipped_steps, self.log_per_task)
        if self.should_update():
            self.step(**(step_kwargs or {}))
            self.zero_grad(**(zero_kwargs or {}))

    def _take_capture(self) -> Captured:
        cap, self._capture = self._capture, None
        if cap is None or cap.losses is None or not cap.detached:
            what = ('the model forward did not run inside optim_wrapper.optim_context(model)' if cap is None else
                    f'the shared module {self.shared!r} was not called in the forward' if not cap.detached else
                    'the model forward returned no loss dict')
            raise RuntimeError(f'MultiTaskOptimWrapper.update_params: {what}. Use the stock train_step '
                               '(BaseModel / MMDistributedDataParallel) or wrap the forward in optim_context.')
        return cap

    def _task_losses(self, losses: Mapping[str, Any]) -> tuple[list[str], list[Tensor]]:
        return task_losses(losses, self.task_specs, self.problem_dims)

    def _connect_ranks(self) -> None:
        """In more than one process, the method sums its statistics over the ranks (one state on all ranks)."""
        if not self._checked and world_size() > 1:
            self.method.set_reducer(sum_across_ranks)

    def _gradients(self, losses: list[Tensor], cap: Captured, scale: float, weights: Tensor | None = None):
        """Per-task gradients at the activation(s) (float32, unscaled) and their norms; or, for a method that
        needs none between statistics steps, a tuple of the summed gradient per activation and its norm: the
        gradient of ``sum_i L_i`` (``Sum``) or, given a loss weighting's ``weights``, of ``sum_i w_i L_i``."""
        stats_step = self._steps % self.stats_interval == 0
        scaled = losses if scale == 1.0 else [v * scale for v in losses]
        needs_task_grads = self.method.needs_task_grads and weights is None
        if needs_task_grads or (self.log_per_task and stats_step) or self.grad_mode == 'auto':
            grads = self.amp.unscale(self._per_task_grads(scaled, cap.detached, cap.head_calls), scale)
            return grads, comb.task_norms(grads)
        summed = [comb.head_loss(scaled, None if weights is None else weights.detach())]
        if self.grad_mode == 'linear':       # through the layers (their first call checks them, see task_grads)
            total = self._task_grads(summed, cap.detached, cap.head_calls)
        else:
            total = self._grads('loop', summed, cap.detached, cap.head_calls)
        total = self.amp.unscale(total, scale)
        return tuple(comb.summed_trunk_grads(total)), comb.task_norms(total)

    def _combine(self, grads, cap: Captured, loss_values: Tensor) -> tuple[list[Tensor], Tensor | None]:
        """The trunk gradients and task weights of this step: the method's combination of the per-task gradients
        (drawing from this step's stream), or the summed gradient as it is (a tuple from :meth:`_gradients`)."""
        if isinstance(grads, tuple):
            return list(grads), None
        self.method.collect_stats = self._steps % self.stats_interval == 0
        generator = self.streams.for_step(self.seed, self._steps, cap.detached[0], self.problem_dims)
        trunk_grads = comb.combine(self.method, grads, cap.detached, loss_values, generator, self.problem_dims)
        return trunk_grads, self.method.task_weights

    def _weigh(self, cap: Captured, loss_values: Tensor) -> Tensor:
        """A loss weighting's (``method.loss_only``) task weights of this step from the losses alone, drawing from
        the step's stream; called INSTEAD of ``combine`` (each advances the method's state). The trunk then gets
        the gradient of ``sum_i w_i L_i``, taken as one task (as ``Sum``'s summed gradient), or ``sum_i w_i G_i``
        on the steps that take the per-task gradients anyway (statistics, the first step of ``'auto'``)."""
        self.method.collect_stats = self._steps % self.stats_interval == 0
        generator = self.streams.for_step(self.seed, self._steps, cap.detached[0], self.problem_dims)
        return self.method.weigh_losses(loss_values, generator)

    def _all_finite(self, names: list[str], norms: Tensor, loss_values: Tensor, per_task: bool,
                    weights: Tensor | None = None) -> bool:
        """ONE decision on all ranks: a non-finite loss (or loss weight) anywhere skips the step everywhere;
        non-finite gradients with finite losses are an overflow under loss scaling (every rank lowers the scale
        alike)."""
        local_loss_bad = not bool(torch.isfinite(loss_values).all())
        if weights is not None:
            local_loss_bad = local_loss_bad or not bool(torch.isfinite(weights.detach()).all())
        local_grad_bad = not bool(torch.isfinite(norms).all())
        loss_bad, grad_bad = any_across_ranks([local_loss_bad, local_grad_bad], loss_values.device)
        if not (loss_bad or grad_bad):
            return True
        if grad_bad and not loss_bad and self.amp.enabled:
            old, new = self.amp.backoff()
            print_log(f'MultiTaskOptimWrapper: scaled gradients overflowed, step skipped, loss scale {old:g} -> '
                      f'{new:g}', logger='current')
            return False
        if per_task:
            bad = [n for i, n in enumerate(names)
                   if not (bool(torch.isfinite(loss_values[i]).all()) and bool(torch.isfinite(norms[i])))]
        else:
            bad = [n for i, n in enumerate(names) if not bool(torch.isfinite(loss_values[i]).all())]
            bad = bad or ('the summed gradient' if local_grad_bad else [])
        what = f'loss or gradient at the shared activation for tasks {bad or "(on another rank)"}'
        if weights is not None and not bool(torch.isfinite(weights.detach()).all()):
            what = (f'task weights of {type(self.method).__name__}: {weights.detach().tolist()} for the losses '
                    f'{dict(zip(names, loss_values.tolist()))}')
        warnings.warn(f'MultiTaskOptimWrapper: non-finite {what}; step skipped, nothing updated '
                      f'({self.skipped_steps + 1} skipped so far)')
        return False

    def _skip_micro_step(self) -> None:
        """Skip this micro-step and the rest of its accumulation window: the window's gradients are dropped, the
        micro-step is counted (for the accumulation), nothing is updated."""
        self.skipped_steps += 1
        self.message_hub.update_scalar('train/mtl/skipped_steps', self.skipped_steps)
        self.zero_grad()
        self._inner_count += 1
        self._window_skipped = not self.should_update()

    def _check_structure(self, cap: Captured, heads: Tensor) -> None:
        """On the first applied step: the task losses reach the trunk only through the shared activation (an
        explicit ``grad_mode='linear'`` is checked by :mod:`.task_grads`)."""
        if not self._checked:
            check_trunk_isolated(self._model, cap.originals, heads, self.shared)
            self._checked = True

    def _backward(self, cap: Captured, trunk_grads: list[Tensor], heads: Tensor, amp_scale: float) -> None:
        """ONE backward: the combined gradient into the trunk, the task losses through the heads, scaled for
        mixed precision and the accumulation window; only into the parameters (the heads' gradient at the detached
        copy is not needed)."""
        scale = float(self.scale_loss(torch.ones((), dtype=torch.float32, device=heads.device))) * amp_scale
        if scale != 1.0:
            trunk_grads = [g * scale for g in trunk_grads]
            heads = heads * scale
        trunk_grads = [g.to(a.dtype) for g, a in zip(trunk_grads, cap.originals)]
        params = [p for p in self._model.parameters() if p.requires_grad] + self._method_parameters()
        torch.autograd.backward(list(cap.originals) + [heads], [g.detach() for g in trunk_grads] + [None],
                                inputs=params)

    def _method_parameters(self) -> list[Tensor]:
        """The method's own trainable parameters (UW's log-variances), put into the optimizer (a parameter group of
        their own, on the model's device) the first time they are seen: at construction, or on the first step
        when the method creates them then."""
        extra = self.method.parameters()
        known = {id(p) for group in self.optimizer.param_groups for p in group['params']}
        new = [p for p in extra if id(p) not in known]
        if new:
            device = next((p.device for group in self.optimizer.param_groups for p in group['params']), None)
            for p in new:
                p.data = p.data.to(device) if device is not None else p.data
            self.optimizer.add_param_group(dict(params=new))
        return extra

    def step(self, **kwargs) -> None:
        """``clip_grad`` and ``optimizer.step``; with a loss scaler as ``AmpOptimWrapper.step`` does it. The
        method's own parameters are not in the DDP module: their gradients are averaged over the ranks here."""
        if world_size() > 1:
            for p in self.method.parameters():
                if p.grad is not None:
                    p.grad = sum_across_ranks(p.grad) / world_size()
        if not self.amp.enabled:
            return super().step(**kwargs)
        self.amp.step(self.optimizer, self._clip_grad if self.clip_grad_kwargs else None, **kwargs)

    # ------------------------------------------------------------------------------------------------ per-task grads
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

    @property
    def grad_mode(self) -> str:
        """The per-task gradient mode (``'auto'`` until the first step has chosen one)."""
        return self._task_grads.mode

    @grad_mode.setter
    def grad_mode(self, mode: str) -> None:
        if mode not in GRAD_MODES:
            raise ValueError(f'grad_mode must be one of {GRAD_MODES}, got {mode!r}')
        self._task_grads.mode = mode

    # ------------------------------------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        state = super().state_dict()
        state['mtl'] = dict(method=self.method.state_dict(), seed=self.seed, skipped_steps=self.skipped_steps,
                            steps=self._steps, grad_mode=self.grad_mode, window_skipped=self._window_skipped)
        scaler_state = self.amp.state_dict()
        if scaler_state is not None:
            state['loss_scaler'] = scaler_state
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """The method's state first (a method with parameters creates them from it, and they join the optimizer
        before its state is loaded). Also reads checkpoints written before the random stream was counter-based:
        their ``generator`` state is not needed (the stream is a function of ``seed``, rank and ``steps``)."""
        state_dict = dict(state_dict)
        mtl = state_dict.pop('mtl', None)
        scaler_state = state_dict.pop('loss_scaler', None)
        if scaler_state is not None:
            self.amp.load_state_dict(scaler_state)
        if mtl is not None:
            self.method.load_state_dict(mtl.get('method') or {})
            self._method_parameters()
        super().load_state_dict(state_dict)
        if mtl is None:
            return
        self.seed = int(mtl.get('seed', self.seed))
        self.skipped_steps = mtl.get('skipped_steps', 0)
        self._steps = mtl.get('steps', 0)
        self._window_skipped = bool(mtl.get('window_skipped', False))
        if mtl.get('grad_mode') in GRAD_MODES:
            self.grad_mode = mtl['grad_mode']

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(method={self.method!r}, shared={self.shared!r}, '
                f'tasks={[s.name for s in self.task_specs] if self.task_specs else "loss* keys"})')
