"""Several processes: the methods' statistics go through ``Method.set_reducer`` (a cross-process sum) so that every
rank computes the same weights and state, equal to one process's on the concatenated gradients (squared norms and
Gram matrices summed, losses averaged). The ranks are threads with a fake all-reduce (``_util.ThreadAllReduce``);
the engine's multi-process tests run the real one."""
from __future__ import annotations

import pytest
import torch

from graddrop_mtl.methods import METHODS, MGDA, Compose, GradDrop, GradNorm, GradPenalty, Method, PCGrad, Sum
from graddrop_mtl.methods.base import reduce_statistics
from graddrop_mtl.methods.blocks import TaskBlocks

from ._util import ThreadAllReduce, gen, run_ranks


def rank_data(n_steps: int, n_tasks: int, batches: tuple[int, ...], seed: int, dtype=torch.float64):
    """Per step and rank: gradients ``[T, B_r, 3, 5]`` (tasks of different scales) and losses ``[T]``."""
    scales = torch.linspace(0.5, 3.0, n_tasks, dtype=dtype).view(-1, 1, 1, 1)
    steps = []
    for s in range(n_steps):
        grads = [torch.randn(n_tasks, b, 3, 5, generator=gen(seed + 100 * s + r), dtype=dtype) * scales
                 + 0.3 * torch.randn(1, b, 3, 5, generator=gen(seed + 100 * s + 50 + r), dtype=dtype)
                 for r, b in enumerate(batches)]
        losses = [torch.rand(n_tasks, generator=gen(seed + 100 * s + 70 + r), dtype=dtype) + 0.5
                  for r in range(len(batches))]
        steps.append((grads, losses))
    return steps


def single_process(make, steps, blocks: bool = False) -> list[torch.Tensor]:
    """The weights of one process that sees the concatenated gradients and the mean loss at every step."""
    method = make()
    weights = []
    for grads, losses in steps:
        full = torch.cat(grads, dim=1)
        mean = torch.stack(losses).mean(0)
        if blocks:
            method.combine_blocks(dense_blocks(full), losses=mean)
        else:
            method.combine(full, losses=mean, generator=gen(0))
        weights.append(method.task_weights.clone())
    return weights


def dense_blocks(grads: torch.Tensor) -> TaskBlocks:
    return TaskBlocks(grads.shape[0], grads.shape[1:], base=grads, base_tasks=range(grads.shape[0]))


def ranks(make, steps, world: int, blocks: bool = False):
    """Each rank's weights per step and its final state (methods with a thread all-reduce as the reducer)."""
    reduce = ThreadAllReduce(world)

    def rank(r: int):
        method = make()
        method.set_reducer(reduce.reducer(r))
        weights = []
        for grads, losses in steps:
            if blocks:
                method.combine_blocks(dense_blocks(grads[r]), losses=losses[r])
            else:
                method.combine(grads[r], losses=losses[r], generator=gen(0))
            weights.append(method.task_weights.clone())
        return weights, method.state_dict()

    return run_ranks(world, rank), reduce


MAKERS = {
    'GradNorm': lambda: GradNorm(alpha=1.5, lr=0.05),
    'MGDA-none': lambda: MGDA(),
    'MGDA-l2': lambda: MGDA(normalization='l2'),
    'MGDA-loss': lambda: MGDA(normalization='loss'),
    'MGDA-loss+': lambda: MGDA(normalization='loss+'),
    'GradNorm+GradDrop': lambda: Compose(GradNorm(lr=0.05), GradDrop()),
    'MGDA+GradDrop': lambda: Compose(MGDA(normalization='l2'), GradDrop()),
}


@pytest.mark.parametrize('name', sorted(MAKERS))
@pytest.mark.parametrize('batches', [(2, 2), (1, 3, 2, 2)])
def test_every_rank_gets_the_single_process_weights(name, batches):
    """2 and 4 ranks (unequal batches): every rank's weights at every step equal those of one process on the
    concatenated gradients with the mean losses, and the ranks' states are identical."""
    steps = rank_data(4, 3, batches, seed=len(batches))
    expected = single_process(MAKERS[name], steps)
    results, reduce = ranks(MAKERS[name], steps, len(batches))
    for weights, _ in results:
        for w, ref in zip(weights, expected):
            torch.testing.assert_close(w, ref, rtol=1e-10, atol=1e-12)
    states = [state for _, state in results]
    for state in states[1:]:
        torch.testing.assert_close(state, states[0], rtol=0, atol=0)
    assert reduce.calls == len(steps)          # one all-reduce per step


@pytest.mark.parametrize('name', ['GradNorm', 'MGDA-l2', 'MGDA-loss+'])
def test_blocks_reduce_like_dense(name):
    steps = rank_data(3, 4, (2, 3), seed=7)
    expected = single_process(MAKERS[name], steps, blocks=True)
    results, _ = ranks(MAKERS[name], steps, 2, blocks=True)
    for weights, _ in results:
        for w, ref in zip(weights, expected):
            torch.testing.assert_close(w, ref, rtol=1e-10, atol=1e-12)


def test_local_weights_differ_without_the_reducer():
    """The defect this guards against: without the reducer each rank's GradNorm weights drift apart."""
    steps = rank_data(3, 3, (2, 2), seed=3)
    local = []
    for r in range(2):
        method = GradNorm(lr=0.05)
        for grads, losses in steps:
            method.combine(grads[r], losses=losses[r])
        local.append(method.state_dict()['weights'])
    assert not torch.allclose(local[0], local[1])


def test_one_dimensional_mgda_uses_the_reduced_gram():
    """Scalar gradients have a closed form for one process; with a reducer the global gradient has one element
    per rank, so the Gram matrix path is taken."""
    g = [torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64), torch.tensor([[3.0], [1.0], [-1.0]],
                                                                                dtype=torch.float64)]
    ref = MGDA()
    ref.combine(torch.cat(g, 1))
    reduce = ThreadAllReduce(2)

    def rank(r):
        m = MGDA()
        m.set_reducer(reduce.reducer(r))
        m.combine(g[r])
        return m.task_weights

    for w in run_ranks(2, rank):
        torch.testing.assert_close(w, ref.task_weights, rtol=1e-10, atol=1e-12)


def test_reduce_statistics_convention():
    """Sums are summed, means divided by the world size (the trailing 1 of the packed vector), shapes and dtypes
    kept, one reducer call."""
    calls = []

    def reducer(t):
        calls.append(t.clone())
        return 3 * t                                   # three identical ranks

    sq = torch.tensor([1.0, 4.0], dtype=torch.float64)
    gram = torch.arange(9.0).reshape(1, 3, 3)
    losses = torch.tensor([0.5, 2.0])
    (s, g), (m,) = reduce_statistics(reducer, [sq, gram], [losses])
    assert len(calls) == 1 and calls[0].dtype == torch.float64 and calls[0][-1] == 1
    torch.testing.assert_close(s, 3 * sq)
    torch.testing.assert_close(g, 3 * gram)
    torch.testing.assert_close(m, losses)
    assert g.dtype == torch.float32 and g.shape == (1, 3, 3) and m.dtype == torch.float32
    (s2,), () = reduce_statistics(None, [sq])
    assert s2 is sq
    with pytest.raises(ValueError, match='shape'):
        reduce_statistics(lambda t: t[:-1], [sq])


# -- the method interface the wrapper uses -------------------------------------------------------------------------
def test_interface_defaults_on_every_method():
    """Every method has collect_stats (default True), create_graph, set_reducer and penalty, so the wrapper needs
    no hasattr branches."""
    for name, cls in METHODS.items():
        if not cls.__module__.startswith('graddrop_mtl.methods'):
            continue
        method = Compose(GradNorm(), GradDrop()) if cls is Compose else cls()
        assert method.collect_stats is True, name
        assert isinstance(method.create_graph, bool), name
        assert method.reducer is None, name
        method.set_reducer(lambda t: t)
        assert method.reducer is not None, name
    with pytest.raises(NotImplementedError, match='penalty'):
        Sum().penalty(torch.ones(1, 2))
    with pytest.raises(TypeError, match='callable'):
        Sum().set_reducer(3)


def test_compose_forwards_the_reducer_stats_flag_and_penalty():
    compose = Compose(MGDA(), PCGrad())
    reducer = lambda t: t                                   # noqa: E731
    compose.set_reducer(reducer)
    assert compose.weighting.reducer is reducer and compose.then.reducer is reducer
    compose.collect_stats = False
    assert not compose.weighting.collect_stats and not compose.then.collect_stats and not compose.collect_stats
    assert compose.create_graph is False
    with_penalty = Compose(GradNorm(), GradPenalty(weight=0.5))
    assert with_penalty.create_graph is True
    total = torch.tensor([[1.0, 2.0]], requires_grad=True)
    value = with_penalty.penalty(total)
    torch.testing.assert_close(value, torch.tensor(2.5))
    value.backward()
    torch.testing.assert_close(total.grad, torch.tensor([[1.0, 2.0]]))


def test_base_class_is_the_interface():
    assert Method.collect_stats is True and Method.create_graph is False and Method.reducer is None
