"""The contract every multitask gradient method follows, and the plain-Python registry of methods.

Nothing here imports mmengine: the methods are plain PyTorch and can be used on their own::

    from graddrop_mtl.methods import GradDrop
    trunk_grad = GradDrop(k=1.0).combine(grads, activation=a)   # grads: [T, *a.shape]

``graddrop_mtl.registry.MTL_METHODS`` mirrors :data:`METHODS` into an mmengine registry for configs.

Shapes. ``grads`` stacks the per-task gradients at the shared activation ``A``: ``[T, *A.shape]``. By default the
whole activation is one problem: dot products, norms and random orders run over all its elements, batch included.
``problem_dims=d`` says that the first ``d`` dims of ``A`` index *independent* problems (for example the 200
replicas of the sine experiment, trained side by side in one tensor): every reduction then runs per problem, and
``losses`` and :attr:`Method.task_weights` carry the problem dims too (``[T, *A.shape[:d]]``).
"""
from __future__ import annotations

import functools
import inspect
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .blocks import TaskBlocks

#: name -> class of every registered method.
METHODS: dict[str, type['Method']] = {}
#: called with (name, class) for every method registered now and later (the mmengine mirror uses it).
_REGISTER_CALLBACKS: list[Callable[[str, type['Method']], None]] = []


def on_register(callback: Callable[[str, type['Method']], None]) -> None:
    """Call ``callback(name, cls)`` for every registered method, now and whenever one is registered later."""
    _REGISTER_CALLBACKS.append(callback)
    for name, cls in list(METHODS.items()):
        callback(name, cls)


def register_method(cls: type['Method']) -> type['Method']:
    """Class decorator: register ``cls`` under its class name."""
    name = cls.__name__
    if name in METHODS and METHODS[name] is not cls:
        raise KeyError(f'a multitask method named {name!r} is already registered ({METHODS[name]})')
    METHODS[name] = cls
    for callback in _REGISTER_CALLBACKS:
        callback(name, cls)
    return cls


def build_method(cfg: 'Method | Mapping[str, Any]') -> 'Method':
    """Build a method from ``dict(type='GradDrop', **kwargs)`` (or return an already built one)."""
    if isinstance(cfg, Method):
        return cfg
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        raise TypeError(f'a multitask method config must be a dict with a "type" key, got {cfg!r}')
    cfg = dict(cfg)
    name = cfg.pop('type')
    if isinstance(name, type) and issubclass(name, Method):
        return name(**cfg)
    if name not in METHODS:
        raise KeyError(f'unknown multitask method type {name!r}; registered: {sorted(METHODS)}')
    cls = METHODS[name]
    params = {} if cls.__init__ is object.__init__ else inspect.signature(cls.__init__).parameters
    unknown = [k for k in cfg if k not in params]
    if unknown and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise TypeError(f'{name} got unknown arguments {unknown}; it takes {[p for p in params if p != "self"]}')
    return cls(**cfg)


#: ``reducer(t) -> Tensor``: the SUM of ``t`` over all processes (a new tensor, same shape, dtype and device).
Reducer = Callable[[Tensor], Tensor]


class Method:
    """Base class: turns per-task gradients at the shared activation into the one gradient sent into the trunk.

    Subclasses implement :meth:`combine`. Methods that re-weight the task losses set :attr:`task_weights` to the
    weights they used in the last call; the task heads then receive the gradient of ``sum_i w_i L_i``.

    The interface the wrapper uses, besides :meth:`combine` / :meth:`combine_blocks`:

    * :attr:`needs_task_grads`: ``False`` when the trunk gradient is the plain sum (no per-task gradients needed);
    * :attr:`collect_stats`: set by the wrapper before each call; ``False`` lets a method skip the work that only
      feeds :meth:`last_stats`;
    * :attr:`create_graph` and :meth:`penalty`: a method with ``create_graph = True`` adds ``penalty(G)`` to the
      training loss, where ``G`` is the gradient of the summed task loss at the shared activation, taken with its
      graph (double backward);
    * :meth:`set_reducer`: under data parallelism, a cross-process sum the method's statistics go through;
    * :attr:`loss_only` and :meth:`weigh_losses`: weights from the losses alone (no per-task gradients needed);
    * :meth:`parameters` and :meth:`loss_term`: trainable parameters of the method (UW) and their loss term.

    Several processes (data parallelism). Each process (rank) holds the per-task gradients of its own batch. A
    method whose weights or state come from statistics of the gradients (GradNorm, MGDA, and the other weightings)
    sums those statistics over the ranks with the reducer BEFORE computing anything from them, so that every rank
    computes the same weights and the same state. The convention (:func:`reduce_statistics`):

    * squared norms and Gram-matrix entries are SUMMED over the ranks: they are the statistics of the
      concatenation of the ranks' gradients along the activation (the gradient of the global batch, as one process
      holding every rank's activation would see it with each rank's loss as given);
    * task losses are AVERAGED (summed, divided by the world size): the loss of the global batch when every rank's
      loss is a mean over an equally sized batch.

    The combined trunk gradient is then formed from each rank's own gradients with those common weights, and the
    data-parallel wrapper averages it like any gradient. Methods that act on the gradients themselves without
    state (GradDrop, Random GradDrop, PCGrad) stay local to each rank, as the authors' code runs inside each replica.
    """

    #: weights applied to the task losses in the last ``combine`` (``None``: all ones).
    task_weights: Tensor | None = None
    #: set by methods that need ``create_graph=True`` per-task gradients (gradient penalty); see :meth:`penalty`.
    create_graph: bool = False
    #: ``False`` for methods whose trunk gradient is the plain sum (``Sum``): the wrapper then takes one gradient
    #: of the summed loss instead of T per-task gradients, except on the steps where it logs per-task statistics.
    needs_task_grads: bool = True
    #: whether the next call computes the statistics of :meth:`last_stats` (the wrapper sets it on logging steps).
    collect_stats: bool = True
    #: the cross-process sum (see :meth:`set_reducer`); ``None``: one process.
    reducer: Reducer | None = None
    #: the weights depend on the task losses only: :meth:`weigh_losses` gives them without per-task gradients
    #: (the trunk gradient is then the gradient of ``sum_i w_i L_i``).
    loss_only: bool = False

    def weigh_losses(self, losses: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """For :attr:`loss_only` methods: this step's task weights from the losses alone (state advanced)."""
        raise NotImplementedError(f'{type(self).__name__} needs per-task gradients (loss_only is False)')

    def parameters(self) -> list[Tensor]:
        """Trainable parameters of the method (UW's log-variances): the training loop optimises them with the
        model, backpropagates the weighted loss and :meth:`loss_term` into them, and averages their gradients
        over the ranks. Default: none."""
        return []

    def loss_term(self) -> Tensor | None:
        """A term the training loop adds to the loss (a function of :meth:`parameters`); ``None``: nothing."""
        return None

    def set_reducer(self, reducer: Reducer | None) -> None:
        """Use ``reducer(t)``, the sum of ``t`` over all processes (a new tensor of the same shape, dtype and
        device), for the statistics the weights and the state are computed from; ``None``: one process."""
        if reducer is not None and not callable(reducer):
            raise TypeError(f'{type(self).__name__}.set_reducer needs a callable or None, got {reducer!r}')
        self.reducer = reducer

    def penalty(self, total_grad: Tensor) -> Tensor:
        """The term added to the training loss when :attr:`create_graph` is set, from the gradient of the summed
        task loss at the shared activation ``total_grad`` (``[1, *A.shape]``, with its graph)."""
        raise NotImplementedError(f'{type(self).__name__} sets create_graph but defines no penalty()')

    def combine(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
                generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor:
        """Return the trunk gradient, shaped like one task's gradient ``grads[0]``."""
        raise NotImplementedError

    def combine_blocks(self, blocks: 'TaskBlocks', *, activation: Tensor | None = None,
                       losses: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """:meth:`combine` on per-task gradients stored as :class:`~graddrop_mtl.methods.blocks.TaskBlocks` (the
        zeros left out), returning the activation-shaped trunk gradient. The default densifies and calls
        :meth:`combine`; the built-in methods work on the blocks directly and give the same result."""
        return self.combine(blocks.to_dense(), activation=activation, losses=losses, generator=generator)

    def weigh(self, grads: Tensor, *, activation: Tensor | None = None, losses: Tensor | None = None,
              generator: torch.Generator | None = None, problem_dims: int = 0) -> Tensor | None:
        """This step's :attr:`task_weights` (and the state update :meth:`combine` makes), without the combined
        gradient: what :class:`~graddrop_mtl.methods.simple.Compose` asks of its weighting. The default runs
        :meth:`combine` and discards its result; the weighting methods (GradNorm, MGDA) skip the weighted sum."""
        self.combine(grads, activation=activation, losses=losses, generator=generator, problem_dims=problem_dims)
        return self.task_weights

    def weigh_blocks(self, blocks: 'TaskBlocks', *, activation: Tensor | None = None, losses: Tensor | None = None,
                     generator: torch.Generator | None = None) -> Tensor | None:
        """:meth:`weigh` on :class:`~graddrop_mtl.methods.blocks.TaskBlocks`."""
        self.combine_blocks(blocks, activation=activation, losses=losses, generator=generator)
        return self.task_weights

    def __call__(self, grads: Tensor, **kwargs: Any) -> Tensor:
        return self.combine(grads, **kwargs)

    #: statistics of the last call for logging (name -> float); filled by methods that have any.
    def last_stats(self) -> dict[str, float]:
        return dict(getattr(self, '_stats', {}))

    # -- state (checkpointing); stateless by default -------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            raise KeyError(f'{type(self).__name__} is stateless but the checkpoint holds {sorted(state)}')

    def extra_repr(self) -> str:
        return ''

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.extra_repr()})'


# ---------------------------------------------------------------------------------------------------------------
# Shared helpers for the methods.
# ---------------------------------------------------------------------------------------------------------------
def check_grads(grads: Tensor, problem_dims: int = 0) -> None:
    if not isinstance(grads, Tensor):
        raise TypeError(f'grads must be a Tensor [T, *activation.shape], got {type(grads).__name__}')
    if grads.dim() < 1 + problem_dims or grads.shape[0] < 1:
        raise ValueError(f'grads must be [T, *activation.shape] with T >= 1 and {problem_dims} problem dims; '
                         f'got shape {tuple(grads.shape)}')


def reduce_statistics(reducer: Reducer | None, sums: Sequence[Tensor] = (),
                      means: Sequence[Tensor] = ()) -> tuple[list[Tensor], list[Tensor]]:
    """Statistics over all processes, with ONE call of ``reducer`` (see :class:`Method`): every tensor of ``sums``
    summed over the ranks (squared norms, Gram matrices), every tensor of ``means`` averaged (task losses). The
    tensors travel as one float64 vector with a trailing 1 whose sum is the world size; each comes back in its own
    shape and dtype (detached). Without a reducer (one process) the tensors are returned as given."""
    if reducer is None:
        return list(sums), list(means)
    tensors = [*sums, *means]
    if not tensors:
        return [], []
    device = tensors[0].device
    parts = [t.detach().to(device=device, dtype=torch.float64).reshape(-1) for t in tensors]
    packed = torch.cat(parts + [torch.ones(1, dtype=torch.float64, device=device)])
    total = reducer(packed)
    if not isinstance(total, Tensor) or total.shape != packed.shape:
        raise ValueError(f'the reducer must return a tensor of the shape it was given, {tuple(packed.shape)}; got '
                         f'{getattr(total, "shape", type(total).__name__)}')
    world = total[-1]
    out = []
    for k, (t, part) in enumerate(zip(tensors, total[:-1].split([p.numel() for p in parts]))):
        value = part.reshape(t.shape) if k < len(sums) else part.reshape(t.shape) / world
        out.append(value.to(device=t.device, dtype=t.dtype))
    return out[:len(sums)], out[len(sums):]


def flat_per_problem(grads: Tensor, problem_dims: int) -> Tensor:
    """``[T, *P, *rest] -> [P, T, D]`` where P is the product of the problem dims (1 when there are none)."""
    t = grads.shape[0]
    pshape = grads.shape[1:1 + problem_dims]
    n_problems = int(torch.Size(pshape).numel())
    return grads.reshape(t, n_problems, -1).transpose(0, 1)


def weights_view(weights: Tensor, grads: Tensor, problem_dims: int) -> Tensor:
    """Broadcast task weights ``[T, *P]`` (or ``[T]``) against ``grads`` ``[T, *P, *rest]``."""
    extra = grads.dim() - weights.dim()
    return weights.reshape(*weights.shape, *([1] * extra)).to(grads.dtype)


def as_task_vector(value: float | list[float] | tuple[float, ...] | Tensor, n_tasks: int, name: str,
                   like: Tensor) -> Tensor:
    """A per-task parameter given as a scalar or a list of T values, as a Tensor of shape [T]."""
    vec = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if vec.dim() == 0:
        return vec.expand(n_tasks)
    if vec.shape != (n_tasks,):
        raise ValueError(f'{name} has {vec.numel()} values but there are {n_tasks} tasks; give one float or a list '
                         f'of {n_tasks}')
    return vec


ActivationFn = Callable[[Tensor], Tensor]


#: Below this many elements per task, task sums run row by row in a fixed order (see :func:`sum_tasks`).
SMALL_TASK_TENSOR = 4096


def sum_tasks(x: Tensor) -> Tensor:
    """Sum over dim 0 (tasks).

    For small tensors the rows are added one by one in task order: ``x.sum(0)`` associates differently depending on
    the trailing shape (a ``[T, 1]`` tensor is reduced along its contiguous dim, a ``[T, N]`` one row by row), so a
    problem alone and the same problem among a few others could differ in the last bit. Large tensors use torch's
    fused reduction.
    """
    if x[0].numel() > SMALL_TASK_TENSOR:
        return x.sum(0)
    out = x[0].clone()
    for row in x[1:]:
        out += row
    return out


def abs_sum_tasks(x: Tensor) -> Tensor:
    """``sum_i |x_i|`` over dim 0, the rows added one by one in task order (the fixed order :func:`sum_tasks` uses
    for small tensors). For large stacks :func:`sum_and_abs_sum_tasks` reads them once for both sums."""
    out = x[0].abs()
    for row in x[1:]:
        out += row.abs()
    return out


#: Columns per chunk in :func:`sum_and_abs_sum_tasks`: a ``[T, 4096]`` float32 chunk (655 KB at T = 40) and its
#: absolute values stay in a core's L2 cache, so the task stack is read from memory once.
TASK_SUM_CHUNK = 1 << 12


def sum_and_abs_sum_tasks(x: Tensor, chunk: int = TASK_SUM_CHUNK) -> tuple[Tensor, Tensor]:
    """``(sum_i x_i, sum_i |x_i|)`` over dim 0, as :func:`sum_tasks` and :func:`abs_sum_tasks` compute them (the same
    values for small tensors; for large ones the same sum and the absolute sum up to the order of the additions).

    Large tensors are reduced ``chunk`` columns at a time, each chunk's absolute values written to a buffer that stays
    in cache: one pass over the stack in memory instead of two (at CelebA's stored 218 x 178 size, ``[40, 2.4M]``:
    64 ms against 99 ms on one CPU thread).
    """
    if x[0].numel() <= SMALL_TASK_TENSOR:
        return sum_tasks(x), abs_sum_tasks(x)
    flat = x.reshape(x.shape[0], -1)
    n = flat.shape[1]
    total = torch.empty(n, dtype=x.dtype, device=x.device)
    mass = torch.empty_like(total)
    buf = torch.empty(flat.shape[0], min(chunk, n), dtype=x.dtype, device=x.device)
    for start in range(0, n, chunk):
        part = flat[:, start:start + chunk]
        torch.sum(part, 0, out=total[start:start + chunk])
        absolute = buf[:, :part.shape[1]]
        torch.abs(part, out=absolute)
        torch.sum(absolute, 0, out=mass[start:start + chunk])
    return total.reshape(x.shape[1:]), mass.reshape(x.shape[1:])


def sq_norms(flat: Tensor, chunk: int = 1 << 14) -> Tensor:
    """Squared L2 norms of the rows of ``flat`` ``[T, D]`` in float64: float32 norms over chunks of ``chunk``
    elements (one fast pass; torch's float32 norm of a whole 20M-element row is off by about 1e-3 relative),
    their squares added in float64. Rows whose float32 squares overflow or underflow (:func:`badly_scaled`) are
    summed in float64 instead."""
    t, d = flat.shape
    if flat.dtype == torch.float64:
        return torch.linalg.vector_norm(flat, dim=1) ** 2
    if d <= chunk:
        return flat.double().pow(2).sum(1)
    q = d // chunk
    out = torch.linalg.vector_norm(flat[:, :q * chunk].reshape(t, q, chunk), dim=2).double().pow(2).sum(1)
    if q * chunk < d:
        out = out + torch.linalg.vector_norm(flat[:, q * chunk:], dim=1).double() ** 2
    if badly_scaled(out, flat):
        out = float64_sq_norms(flat)
    return out


#: Squares of float32 (or bfloat16) values below ``finfo.tiny * 2**26`` (about 8e-31) lose precision when summed in
#: that type (subnormal products, absolute error up to 1.4e-45 each); see :func:`badly_scaled`.
UNDERFLOW_MARGIN = 2.0 ** 26
#: Columns per float64 chunk in the fallbacks :func:`float64_sq_norms` and :func:`float64_gram`.
FLOAT64_CHUNK = 1 << 16


def badly_scaled(sq: Tensor, flat: Tensor) -> bool:
    """Whether float64 squared norms ``sq`` (any shape) of the rows of ``flat`` (``[*sq.shape, D]``), made of
    products in ``flat``'s own precision, may be wrong: not finite (a chunk's sum of squares overflowed, at
    float32 values from about 1e17 on) or below ``D * finfo.tiny * 2**26`` while the row is not all zeros (the
    products underflowed, at float32 values of 1e-19 and below). Above that bound the error of the subnormal
    products is at most about 2e-15 of the norm. The cheap test is on ``sq``; only a row whose squared norm is 0
    is read again (is it all zeros?)."""
    if flat.dtype == torch.float64:
        return False
    d = flat.shape[-1]
    sq = sq.detach()
    low = d * torch.finfo(flat.dtype).tiny * UNDERFLOW_MARGIN
    bad = ~torch.isfinite(sq) | (sq < low)
    if not bool(bad.any()):
        return False
    if bool((bad & (sq != 0)).any()):
        return True
    rows = flat.detach().reshape(-1, d)[bad.reshape(-1)]
    return bool(rows.any())


def float64_sq_norms(flat: Tensor) -> Tensor:
    """Squared L2 norms of the rows of ``flat`` ``[T, D]``, every product in float64 (exact range for any float32
    value), :data:`FLOAT64_CHUNK` columns at a time."""
    out = torch.zeros(flat.shape[0], dtype=torch.float64, device=flat.device)
    for start in range(0, flat.shape[1], FLOAT64_CHUNK):
        out = out + flat[:, start:start + FLOAT64_CHUNK].double().pow(2).sum(1)
    return out


def float64_gram(flat: Tensor) -> Tensor:
    """Gram matrices ``[P, T, T]`` of ``flat`` ``[P, T, D]``, every product in float64, :data:`FLOAT64_CHUNK`
    columns at a time (no float64 copy of the whole stack)."""
    n_prob, n_tasks, dim = flat.shape
    gram = torch.zeros(n_prob, n_tasks, n_tasks, dtype=torch.float64, device=flat.device)
    for start in range(0, dim, FLOAT64_CHUNK):
        part = flat[..., start:start + FLOAT64_CHUNK].double()
        gram = gram + torch.bmm(part, part.transpose(1, 2))
    return gram


def gram_matrix(grads: Tensor, problem_dims: int = 0, chunk: int = 1 << 12) -> tuple[Tensor, Tensor]:
    """Flattened gradients ``[P, T, D]`` and their Gram matrices ``[P, T, T]`` in float64 (exactly symmetric).

    Short gradients (``D <= chunk``) are multiplied in float64. Longer ones chunk by chunk: each chunk's product in
    the gradients' own precision (fast BLAS), the chunk products summed in float64. With ``chunk = 2**12`` float32
    entries come out within about 2e-8 of the float64 products (relative to the largest squared norm); one float32
    product over 20M elements is off by about 6e-3, far too much for MGDA's KKT tolerance, and a float64
    conversion of the gradients costs several passes over them.

    With few tasks the chunks are one batched product (:func:`chunked_gram`): a ``[T, D] x [D, T]`` product is then
    memory-bound, and BLAS handles ``T x T`` tiles of a batch better than a loop of calls (on one CPU thread at
    ``[9, 19.7M]``: 145 ms, against 261 ms for numpy's ``syrk`` and 372 ms for one float32 ``mm``;
    ``tools/analysis/benchmark_combine.py --gram``). From :data:`SYRK_MIN_TASKS` tasks on, on the CPU, each chunk is
    a symmetric rank-k update instead (BLAS ``syrk`` through numpy, which calls it for ``a @ a.T``, on as many
    threads as torch uses; :func:`syrk_gram`): it computes one triangle, and at CelebA's ``[40, 262,144]`` it took
    8.8 ms against 10.8 ms for the batched product and 10.7 ms for one float32 ``mm`` (2026-12-04; at 16 tasks it
    was 1.23x slower, at 24 0.88x, at 32 1.07x, at 80 0.78x).

    Products in float32 overflow from values of about 1e17 on and underflow below about 1e-19; when the diagonal
    shows either (:func:`badly_scaled`, a test on the ``T`` diagonal entries), the Gram matrix is computed again
    with float64 products (:func:`float64_gram`), which hold every float32 value's square.
    """
    flat = flat_per_problem(grads, problem_dims)
    if flat.dtype == torch.float64 or flat.shape[-1] <= chunk:
        part = flat.double()
        gram = torch.bmm(part, part.transpose(1, 2))
    elif (flat.shape[1] >= SYRK_MIN_TASKS and flat.device.type == 'cpu' and flat.dtype == torch.float32
          and not flat.requires_grad and _numpy_blas() is not None):
        gram = syrk_gram(flat, SYRK_CHUNK, _numpy_blas())
    else:
        gram = torch.stack([chunked_gram(m, chunk) for m in flat.unbind(0)])
    if badly_scaled(gram.diagonal(dim1=1, dim2=2), flat):
        gram = float64_gram(flat)
    return flat, symmetrized(gram)


#: From this many tasks on, :func:`gram_matrix` uses numpy's ``syrk`` on the CPU (see there).
SYRK_MIN_TASKS = 24
#: Columns per ``syrk`` chunk: float32 products over 16,384 elements, summed in float64 (within 5e-8 of float64).
SYRK_CHUNK = 1 << 14


@functools.lru_cache(maxsize=None)
def _numpy_blas() -> Any:
    """threadpoolctl's controller of the BLAS numpy's ``matmul`` calls (``None``: threadpoolctl is not installed or
    finds no BLAS inside numpy)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    import numpy
    root = os.path.dirname(os.path.dirname(os.path.abspath(numpy.__file__)))
    blas = [lib for lib in ThreadpoolController().lib_controllers
            if lib.user_api == 'blas' and os.path.abspath(lib.filepath).startswith(root)
            and 'numpy' in os.path.basename(os.path.dirname(lib.filepath))]
    return blas[0] if len(blas) == 1 else None


def syrk_gram(flat: Tensor, chunk: int, blas: Any) -> Tensor:
    """:func:`gram_matrix`'s float64 sum of float32 chunk products for ``flat [P, T, D]`` (CPU, float32), each by
    numpy's ``syrk``, with numpy's BLAS (``blas``, a threadpoolctl controller) on ``torch.get_num_threads()`` threads
    for the call and set back afterwards."""
    import numpy as np
    n_prob, n_tasks, dim = flat.shape
    gram = np.zeros((n_prob, n_tasks, n_tasks))
    threads = torch.get_num_threads()
    previous = blas.get_num_threads()
    if previous != threads:
        blas.set_num_threads(threads)
    try:
        arr = flat.detach().numpy()            # a view: rows of stride D (or more), unit-stride columns
        with np.errstate(over='ignore', invalid='ignore'):   # an overflow shows in the result (badly_scaled)
            for p in range(n_prob):
                for start in range(0, dim, chunk):
                    part = arr[p, :, start:start + chunk]
                    gram[p] += part @ part.T   # numpy calls syrk for a product with its own transpose
    finally:
        if previous != threads:
            blas.set_num_threads(previous)
    return torch.from_numpy(gram).to(flat.device)


#: At most this many chunk products per ``bmm`` call in :func:`chunked_gram` (bounds its float32 buffer).
GRAM_BATCH = 1024


def chunked_gram(m: Tensor, chunk: int) -> Tensor:
    """``m @ m.T`` in float64 for ``m [T, D]``: float32 (``m``'s dtype) products of column chunks of ``chunk``
    elements, batched (``[n, T, chunk]`` is a view of ``m``, no copy), summed in float64."""
    n_tasks, dim = m.shape
    n = dim // chunk
    gram = torch.zeros(n_tasks, n_tasks, dtype=torch.float64, device=m.device)
    if n:
        x = m[:, :n * chunk].unflatten(1, (n, chunk)).transpose(0, 1)    # [n, T, chunk]
        for start in range(0, n, GRAM_BATCH):
            part = x[start:start + GRAM_BATCH]
            gram += torch.bmm(part, part.transpose(1, 2)).sum(0, dtype=torch.float64)
    if n * chunk < dim:
        rest = m[:, n * chunk:]
        gram += (rest @ rest.T).double()
    return gram


def symmetrized(gram: Tensor) -> Tensor:
    """The lower triangle of ``[P, T, T]`` mirrored (BLAS need not round ``g_i . g_j`` and ``g_j . g_i`` alike)."""
    lower = gram.tril()
    return lower + lower.tril(-1).transpose(-1, -2)


def combine_with_coefficients(flat: Tensor, coef: Tensor, like: Tensor) -> Tensor:
    """``sum_i coef[p, i] * flat[p, i]`` for every problem p, reshaped like one task's gradient."""
    coef = coef.to(flat.dtype)
    if flat[:, 0].numel() > SMALL_TASK_TENSOR:
        return torch.einsum('pt,ptd->pd', coef, flat).reshape(like.shape[1:])
    return sum_tasks((coef.unsqueeze(-1) * flat).transpose(0, 1)).reshape(like.shape[1:])


def per_problem_draws(shape: tuple[int, ...], generator, draw: Callable[[tuple[int, ...], Any], Tensor]) -> Tensor:
    """Random draws of ``shape`` whose dim 0 indexes problems: ``draw(shape, generator)`` once, or, when ``generator``
    is a sequence of one generator per problem, ``draw(shape[1:], generator[p])`` for each problem p, stacked."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f'{len(generator)} generators given for {shape[0]} problems')
        return torch.stack([draw(tuple(shape[1:]), g) for g in generator])
    return draw(tuple(shape), generator)


def generator_device(generator: torch.Generator | None) -> torch.device:
    """Where ``generator`` draws (the CPU for ``None``, the global CPU stream)."""
    return generator.device if isinstance(generator, torch.Generator) else torch.device('cpu')


def uniform(shape: tuple[int, ...], generator, *, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Uniform [0, 1) draws of ``shape`` whose dim 0 indexes problems.

    ``generator`` is one ``torch.Generator`` (or None: the global stream) for all problems, or a sequence of one
    generator per problem: problem p then draws only from ``generator[p]``, so its result does not depend on how
    many other problems run beside it (a replica alone reproduces its trajectory inside a batch of replicas).
    """
    return per_problem_draws(shape, generator,
                             lambda size, g: torch.rand(size, generator=g, device=device, dtype=dtype))


def coin_flips(shape: tuple[int, ...], generator, *, device: torch.device) -> Tensor:
    """Fair coins (a bool tensor of ``shape``) whose dim 0 indexes problems, with the generator rule of
    :func:`uniform`.

    Eight coins per random byte: ``ceil(n / 8)`` uniform bytes from the generator, split into their bits (at
    PointPillars' 19.7M elements, 25 ms against 103 ms for ``torch.rand(n) < 0.5`` on one CPU thread).
    """
    def draw(size: tuple[int, ...], g) -> Tensor:
        n = int(torch.Size(size).numel())
        random_bytes = torch.empty((n + 7) // 8, dtype=torch.uint8, device=device).random_(0, 256, generator=g)
        bits = torch.arange(8, dtype=torch.uint8, device=device)
        return ((random_bytes[:, None] >> bits) & 1).reshape(-1)[:n].reshape(size).bool()

    return per_problem_draws(shape, generator, draw)
