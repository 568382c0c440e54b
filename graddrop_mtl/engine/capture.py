"""What the multitask wrapper captures from a forward pass, and the check that the capture saw the whole picture.

Inside ``optim_wrapper.optim_context(model)`` forward hooks

* replace every output of the shared module by a detached leaf copy (the heads compute their losses from it, so
  per-task gradients can be taken at the copy without a backward through the trunk) and keep the original (trunk
  graph) for the one backward;
* record the listed linear head layers' calls on a copy (``linear_heads``);
* keep the model's loss dict.

The combined gradient reaches the trunk only through the originals. If a head or a loss also reads another trunk
tensor (an intermediate feature, a trunk parameter), the task losses would send raw gradients into the trunk beside
the combined one: :func:`check_trunk_isolated` finds that once, from the autograd graph, and names the module.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
from mmengine.model import is_model_wrapper
from torch import Tensor, nn

from .linear_heads import LINEAR_TYPES


@dataclass
class Captured:
    """One forward's capture."""
    originals: list[Tensor] = field(default_factory=list)   # the shared module's real outputs (trunk graph)
    detached: list[Tensor] = field(default_factory=list)    # the leaf copies the heads consumed
    losses: Mapping[str, Any] | None = None
    head_calls: list[tuple[nn.Module, int, Tensor]] = field(default_factory=list)  # (linear head, act index, out)


def resolve(module: nn.Module, path: str, what: str) -> nn.Module:
    """``module.get_submodule(path)``, or a ``ValueError`` naming ``what=path`` and the modules that do exist."""
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


class ActivationCapture:
    """The forward hooks of ``MultiTaskOptimWrapper`` (see the module docstring).

    Args:
        shared: dotted path of the module whose output is the shared activation.
        linear_heads: dotted paths of the linear layers reading it (may be empty).
        hook_targets: ``(model, listed layers) -> layers`` whose calls on the activation are recorded in
            ``head_calls`` (default: the listed ones); ``TaskGradients.hook_targets`` adds the linear layers
            ``grad_mode='auto'`` may use on its own.
    """

    def __init__(self, shared: str, linear_heads: list[str],
                 hook_targets: Callable[[nn.Module, list[nn.Module]], list[nn.Module]] | None = None) -> None:
        self.shared = shared
        self.linear_heads = linear_heads
        self.hook_targets = hook_targets
        self.model: nn.Module | None = None
        self.record: Captured | None = None
        self._active = False
        self._hooks: list[Any] = []

    def attach(self, model: nn.Module) -> nn.Module:
        """Hook ``model`` (unwrapped from DDP) once; returns the unwrapped model."""
        module = model.module if is_model_wrapper(model) else model
        if self.model is module:
            return module
        for h in self._hooks:
            h.remove()
        shared = resolve(module, self.shared, 'shared')
        heads = []
        for path in self.linear_heads:
            head = resolve(module, path, 'linear_heads')
            if not isinstance(head, LINEAR_TYPES):
                raise TypeError(f'linear_heads: {path!r} is a {type(head).__name__}; only '
                                f'{[t.__name__ for t in LINEAR_TYPES]} can be mapped back linearly')
            heads.append(head)
        self.model = module
        self._hooks = [shared.register_forward_hook(self._shared_hook),
                       module.register_forward_hook(self._loss_hook)]
        targets = self.hook_targets(module, heads) if self.hook_targets is not None else heads
        self._hooks += [h.register_forward_hook(self._linear_head_hook) for h in targets]
        return module

    @contextmanager
    def capturing(self) -> Iterator[Captured]:
        """Capture the forwards run inside the block into a fresh :class:`Captured` (yielded)."""
        self.record = Captured()
        self._active = True
        try:
            yield self.record
        finally:
            self._active = False

    # ------------------------------------------------------------------------------------------------ hooks
    def _shared_hook(self, module: nn.Module, args, output):
        if not self._active or not torch.is_grad_enabled():
            return None
        cap = self.record

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
        if not self._active or not torch.is_grad_enabled() or not args:
            return None
        for j, act in enumerate(self.record.detached):
            if args[0] is act:
                self.record.head_calls.append((module, j, output))
                break
        return None

    def _loss_hook(self, module: nn.Module, args, output):
        if self._active and isinstance(output, Mapping):
            self.record.losses = output
        return None


# ---------------------------------------------------------------------------------------------------- the check
def _leaves_reached(roots: list[Tensor]) -> dict[int, Tensor]:
    """The leaf tensors (parameters) an autograd backward from ``roots`` would accumulate into, by id."""
    stack = [t.grad_fn for t in roots if isinstance(t, Tensor) and t.grad_fn is not None]
    seen: set[Any] = set()
    leaves: dict[int, Tensor] = {}
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, 'variable', None)      # AccumulateGrad: the leaf it accumulates into
        if variable is not None:
            leaves[id(variable)] = variable
        stack.extend(n for n, _ in node.next_functions if n is not None and n not in seen)
    return leaves


def check_trunk_isolated(model: nn.Module, originals: list[Tensor], head_loss: Tensor, shared: str) -> None:
    """Raise a ``RuntimeError`` naming the module(s) when the task losses reach a trunk parameter other than
    through the shared activation (found by walking the autograd graphs, nothing is computed)."""
    trunk = _leaves_reached(list(originals))
    leaked = [p for i, p in _leaves_reached([head_loss]).items() if i in trunk]
    if not leaked:
        return
    ids = {id(p) for p in leaked}
    names = [n for n, p in model.named_parameters() if id(p) in ids]
    modules = sorted({n.rpartition('.')[0] or n for n in names})
    raise RuntimeError(
        f'MultiTaskOptimWrapper: the task losses reach the trunk parameters {names} (module(s) {modules}) other than '
        f'through the shared activation {shared!r}: a head or a loss reads another trunk tensor, so these parameters '
        f'would get the raw task gradients beside the combined one. Make the heads read only the output of '
        f'{shared!r} (or choose as `shared` the module whose output carries everything the heads read).')
