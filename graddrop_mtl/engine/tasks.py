"""The tasks of the multitask wrapper: which loss keys of the model's loss dict form a task, and their losses.

By default every ``loss*`` key is a task; ``tasks`` groups keys into named tasks with static weights. A key's value
is reduced as mmengine's ``parse_losses`` does (a Tensor averaged, a list of Tensors averaged and summed), or, with
``problem_dims``, summed over a list but kept per problem.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from torch import Tensor


@dataclass
class TaskSpec:
    name: str
    keys: list[str]
    weight: float = 1.0


def parse_tasks(tasks: Sequence[str] | Mapping[str, Any] | None) -> list[TaskSpec] | None:
    """``tasks`` (``None``, a list of keys, or a dict ``name -> key | [keys] | dict(keys=[...], weight=w)``) as
    :class:`TaskSpec` s; errors name the task and what is wrong with it."""
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


def task_losses(losses: Mapping[str, Any], specs: list[TaskSpec] | None,
                problem_dims: int = 0) -> tuple[list[str], list[Tensor]]:
    """Task names and task losses from the model's loss dict."""
    def reduce(key: str) -> Tensor:
        value = losses[key]
        if problem_dims:
            parts = value if isinstance(value, (list, tuple)) else [value]
            return sum(parts[1:], parts[0])
        if isinstance(value, Tensor):
            return value.mean()
        if isinstance(value, (list, tuple)):
            return sum(v.mean() for v in value)
        raise TypeError(f'loss {key!r} is a {type(value).__name__}; expected a Tensor or a list of Tensors')

    loss_keys = [k for k in losses if 'loss' in k]
    if specs is None:
        if not loss_keys:
            raise KeyError(f'the model returned no loss* keys; its output has {list(losses)}')
        return loss_keys, [reduce(k) for k in loss_keys]
    missing = [k for s in specs for k in s.keys if k not in losses]
    if missing:
        raise KeyError(f'tasks name loss keys {missing} that the model does not return; it returns {list(losses)}')
    assigned = {k for s in specs for k in s.keys}
    unassigned = [k for k in loss_keys if k not in assigned]
    if unassigned:
        raise KeyError(f'loss keys {unassigned} belong to no task; add them to `tasks` '
                       f'(tasks: {[s.name for s in specs]})')
    names, values = [], []
    for s in specs:
        total = sum((reduce(k) for k in s.keys[1:]), reduce(s.keys[0]))
        names.append(s.name)
        values.append(total * s.weight if s.weight != 1.0 else total)
    return names, values
