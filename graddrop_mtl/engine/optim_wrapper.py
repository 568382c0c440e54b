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
   ``is_grads_batched=True``, or a loop; ``grad_mode='auto'`` measures both on the first step and keeps the faster);
3. ``g = method.combine(G, activation=A, losses=L, generator=...)``;
4. one ``torch.autograd.backward`` of ``[A_original, sum_i w_i L_i]`` with gradients ``[g, 1]``: the trunk gets
   ``g``, the heads get the gradient of the (method-weighted) task losses. Under DDP this is the single backward
   DDP expects, so gradients are reduced as usual; then ``clip_grad`` and ``optimizer.step`` as in mmengine.
"""
from __future__ import annotations

import time
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

GRAD_MODES = ('auto', 'loop', 'batched')


@dataclass
class _Capture:
    originals: list[Tensor] = field(default_factory=list)   # the shared module's real outputs (trunk graph)
    detached: list[Tensor] = field(default_factory=list)    # the leaf copies the heads consumed
    losses: Mapping[str, Any] | None = None


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
            per task) or ``'auto'`` (both on the first step: checks they agree, keeps the faster, logs the choice).
        problem_dims: leading dims of the activation that index independent problems (replicas), see
            :mod:`graddrop_mtl.methods.base`. Task losses then carry those dims too.
        problem_rng: give every problem its own random stream, seeded from ``seed`` and its id, so that a replica
            run alone (``problem_ids=[r]``) draws exactly what it draws among all replicas.
        problem_ids: ids of the problems for ``problem_rng`` (default ``0..P-1``).
        seed: seed of the method's random stream. Default: drawn from the global RNG when the wrapper is built
            (the Runner has seeded it from ``randomness.seed``), plus the rank.
        stats_interval: compute the method's per-task statistics (kept fraction) every this many steps; the cheap
            ones (gradient norms, weights, purity, conflicts) are logged every step.
        log_per_task: log per-task gradient norms, weights and kept fractions (one scalar each).
        **kwargs: ``accumulative_counts``, ``clip_grad`` as for ``OptimWrapper``.
    """

    def __init__(self, optimizer, method: Method | Mapping[str, Any] | None = None, shared: str | None = None,
                 tasks: Sequence[str] | Mapping[str, Any] | None = None, grad_mode: str = 'auto',
                 problem_dims: int = 0, problem_rng: bool = False, problem_ids: Sequence[int] | None = None,
                 seed: int | None = None, stats_interval: int = 1, log_per_task: bool = True, **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        if not shared or not isinstance(shared, str):
            raise ValueError('MultiTaskOptimWrapper needs shared="<dotted.module.path>", the module whose output is '
                             'the shared activation (e.g. shared="pts_neck")')
        if grad_mode not in GRAD_MODES:
            raise ValueError(f'grad_mode must be one of {GRAD_MODES}, got {grad_mode!r}')
        self.method: Method = build_method(method if method is not None else dict(type='Sum'))
        self.shared = shared
        self.task_specs = self._parse_tasks(tasks)
        self.grad_mode = grad_mode
        self.problem_dims = int(problem_dims)
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
        self._shared_module: nn.Module | None = None
        self._capture: _Capture | None = None
        self._capturing = False
        self._hooks: list[Any] = []

    # ------------------------------------------------------------------------------------------------ set-up
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

    def _attach(self, model: nn.Module) -> None:
        module = model.module if is_model_wrapper(model) else model
        if self._model is module:
            return
        for h in self._hooks:
            h.remove()
        try:
            shared = module.get_submodule(self.shared)
        except AttributeError:
            parent, found = module, []
            for part in self.shared.split('.'):
                if not hasattr(parent, part) or not isinstance(getattr(parent, part), nn.Module):
                    break
                parent = getattr(parent, part)
                found.append(part)
            where = '.'.join(found) or type(module).__name__
            children = [n for n, _ in parent.named_children()]
            raise ValueError(f'shared={self.shared!r}: the model ({type(module).__name__}) has no such module; '
                             f'the modules under {where!r} are {children}') from None
        self._model, self._shared_module = module, shared
        self._hooks = [shared.register_forward_hook(self._shared_hook),
                       module.register_forward_hook(self._loss_hook)]

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
                yield
        finally:
            self._capturing = False

    # ------------------------------------------------------------------------------------------------ the step
    def task_names(self, losses: Mapping[str, Any]) -> list[str]:
        if self.task_specs is None:
            return [k for k in losses if 'loss' in k]
        return [s.name for s in self.task_specs]

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

    def _per_task_grads(self, task_losses: list[Tensor], acts: list[Tensor], create_graph: bool) -> list[Tensor]:
        mode = self.grad_mode
        if create_graph:
            mode = 'loop'
        if mode == 'auto':
            mode = self._choose_grad_mode(task_losses, acts)
        if mode == 'batched':
            return self._grads_batched(task_losses, acts)
        return self._grads_loop(task_losses, acts, create_graph)

    @staticmethod
    def _grads_loop(task_losses, acts, create_graph=False) -> list[Tensor]:
        per_task = [torch.autograd.grad(loss.sum(), acts, retain_graph=True, create_graph=create_graph,
                                        allow_unused=True, materialize_grads=True) for loss in task_losses]
        return [torch.stack([g[j] for g in per_task]) for j in range(len(acts))]

    @staticmethod
    def _grads_batched(task_losses, acts) -> list[Tensor]:
        stacked = torch.stack([loss.sum() for loss in task_losses])
        eye = torch.eye(len(task_losses), dtype=stacked.dtype, device=stacked.device)
        return list(torch.autograd.grad(stacked, acts, grad_outputs=eye, is_grads_batched=True, retain_graph=True,
                                        allow_unused=True, materialize_grads=True))

    def _choose_grad_mode(self, task_losses, acts) -> str:
        timings = {}
        results = {}
        for mode in ('loop', 'batched'):
            start = time.perf_counter()
            try:
                results[mode] = (self._grads_loop(task_losses, acts) if mode == 'loop'
                                 else self._grads_batched(task_losses, acts))
            except RuntimeError as err:   # vmap cannot batch some head operation
                print_log(f'MultiTaskOptimWrapper: batched per-task gradients failed ({err}); using the loop',
                          logger='current')
                self.grad_mode = 'loop'
                return 'loop'
            timings[mode] = time.perf_counter() - start
        agree = all(torch.allclose(a, b, rtol=1e-4, atol=1e-6 * max(1.0, a.abs().max().item()))
                    for a, b in zip(results['loop'], results['batched']))
        chosen = 'batched' if agree and timings['batched'] < timings['loop'] else 'loop'
        print_log(f'MultiTaskOptimWrapper: per-task gradients by loop {timings["loop"]:.3f}s, batched '
                  f'{timings["batched"]:.3f}s{"" if agree else " (results differ; not used)"}: using {chosen}',
                  logger='current')
        self.grad_mode = chosen
        return chosen

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

    def _all_finite(self, grads: list[Tensor], losses: list[Tensor]) -> bool:
        finite = all(bool(torch.isfinite(g).all()) for g in grads) and all(bool(torch.isfinite(v).all())
                                                                            for v in losses)
        if torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1:
            flag = torch.tensor([0.0 if finite else 1.0], device=grads[0].device)
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
        create_graph = self.method.create_graph
        grads_list = self._per_task_grads(task_losses, acts, create_graph)
        loss_values = torch.stack([v.detach() for v in task_losses])
        if not self._all_finite(grads_list, [loss_values]):
            self._skip_step(names, grads_list, loss_values)
            return
        grads, activation = self._flatten(grads_list, acts)
        self._steps += 1
        if hasattr(self.method, 'collect_stats'):
            self.method.collect_stats = (self._steps - 1) % self.stats_interval == 0
        combined = self.method.combine(grads.detach() if not create_graph else grads, activation=activation,
                                       losses=loss_values, generator=self._get_generator(activation),
                                       problem_dims=self.problem_dims)
        weights = self.method.task_weights
        if weights is None:
            head_loss = sum(v.sum() for v in task_losses)
        else:
            head_loss = sum((w * v).sum() for w, v in zip(weights.to(loss_values.dtype), task_losses))
        if create_graph:
            penalty = self.method.penalty(grads)
            pen_grads = torch.autograd.grad(penalty, acts, retain_graph=True, allow_unused=True,
                                            materialize_grads=True)
            combined = combined.detach() + self._flatten(list(pen_grads), acts)[0]
            head_loss = head_loss + penalty
        trunk_grads = self._unflatten(combined.detach(), acts)
        scale = self.scale_loss(torch.ones((), dtype=loss_values.dtype, device=loss_values.device))
        roots = list(cap.originals) + [head_loss * scale]
        torch.autograd.backward(roots, [g * scale for g in trunk_grads] + [None])
        self._inner_count += 1
        self._log(names, grads, loss_values, weights)
        if self.should_update():
            self.step(**(step_kwargs or {}))
            self.zero_grad(**(zero_kwargs or {}))

    def _skip_step(self, names, grads_list, loss_values) -> None:
        bad = [n for i, n in enumerate(names) if not (bool(torch.isfinite(loss_values[i]).all())
                                                      and all(bool(torch.isfinite(g[i]).all()) for g in grads_list))]
        self.skipped_steps += 1
        warnings.warn(f'MultiTaskOptimWrapper: non-finite loss or gradient at the shared activation for tasks '
                      f'{bad or "(on another rank)"}; step skipped, nothing updated '
                      f'({self.skipped_steps} skipped so far)')
        self._inner_count += 1
        self.zero_grad()
        self.message_hub.update_scalar('train/mtl/skipped_steps', self.skipped_steps)

    def _log(self, names, grads: Tensor, losses: Tensor, weights: Tensor | None) -> None:
        hub = self.message_hub
        stats = self.method.last_stats()
        for key, value in stats.items():
            if key.startswith('kept_frac_'):
                if self.log_per_task:
                    hub.update_scalar(f'train/mtl/kept/{names[int(key[10:])]}', value)
            else:
                hub.update_scalar(f'train/mtl/{key}', value)
        hub.update_scalar('train/mtl/skipped_steps', self.skipped_steps)
        if self.log_per_task:
            norms = grads.detach().flatten(1).norm(dim=1).tolist()
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
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        mtl = state_dict.pop('mtl', None)
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
