"""PCGrad (Yu et al., 2020) and the appendix's Iterative PCGrad against closed forms and a loop reference."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from graddrop_mtl.methods import PCGrad, pcgrad_coefficients

from ._util import gen, pcgrad_orders, pcgrad_reference


def random_grads(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=torch.float64)


def conflicting_pair(seed: int, d: int = 6) -> torch.Tensor:
    g = random_grads(seed, (2, d))
    if float(g[0] @ g[1]) > 0:
        g[1] = -g[1]
    return g


@pytest.mark.parametrize('seed', range(4))
def test_two_tasks_closed_form(seed):
    """Plain: both projected on the other's normal plane. Iterative: the first processed task is projected, the
    second then no longer conflicts, so the result is g1' + g2 or g1 + g2'."""
    g = conflicting_pair(seed)
    g1, g2 = g[0], g[1]
    dot = g1 @ g2
    g1p, g2p = g1 - dot / (g2 @ g2) * g2, g2 - dot / (g1 @ g1) * g1
    out = PCGrad().combine(g.reshape(2, 2, 3), generator=gen(seed))
    torch.testing.assert_close(out.reshape(-1), g1p + g2p, rtol=1e-12, atol=1e-12)
    outcomes = set()
    for s in range(20):
        out = PCGrad(iterative=True).combine(g, generator=gen(s))
        first = torch.allclose(out, g1p + g2, rtol=1e-12, atol=1e-12)
        second = torch.allclose(out, g1 + g2p, rtol=1e-12, atol=1e-12)
        assert first or second
        outcomes.add(first)
    assert outcomes == {True, False}


def test_two_tasks_without_conflict_is_the_sum():
    g = conflicting_pair(5)
    g[1] = -g[1]
    for iterative in (False, True):
        torch.testing.assert_close(PCGrad(iterative=iterative).combine(g, generator=gen(0)), g.sum(0))


def test_projected_gradients_no_longer_conflict_for_two_tasks():
    g = conflicting_pair(6)
    coef = pcgrad_coefficients((g @ g.T)[None], generator=gen(0))[0]
    projected = coef @ g
    assert abs(float(projected[0] @ g[1])) < 1e-12 and abs(float(projected[1] @ g[0])) < 1e-12


@pytest.mark.parametrize('iterative', [False, True])
@pytest.mark.parametrize('n_tasks,d,seed', [(3, 5, 0), (4, 12, 1), (6, 8, 2), (9, 40, 3)])
def test_matches_the_loop_reference_with_the_same_orders(iterative, n_tasks, d, seed):
    g = random_grads(100 + seed, (n_tasks, d))
    out = PCGrad(iterative=iterative).combine(g, generator=gen(seed))
    others, outer = pcgrad_orders(seed, n_tasks, iterative)
    expected = pcgrad_reference(g.numpy(), others, outer, iterative)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-10)


def test_result_is_one_of_the_order_outcomes():
    """Independent of how the orders are drawn: plain PCGrad on 3 tasks gives one of the 2^3 reference outcomes
    (each task has 2 orders of the other two), and different seeds reach more than one of them."""
    g = random_grads(7, (3, 4))
    g[2] = -(g[0] + g[1]) * 0.7 + 0.1 * g[2]          # make task 2 conflict with both others
    outcomes = []
    for choice in itertools.product((0, 1), repeat=3):
        orders = []
        for i in range(3):
            rest = [j for j in range(3) if j != i]
            orders.append(rest if choice[i] == 0 else rest[::-1])
        outcomes.append(pcgrad_reference(g.numpy(), orders, [0, 1, 2], iterative=False))
    outcomes = np.array(outcomes)
    assert len({tuple(np.round(o, 9)) for o in outcomes}) > 1   # the orders matter for this g
    hit = set()
    for seed in range(30):
        out = PCGrad().combine(g, generator=gen(seed)).numpy()
        dist = np.abs(outcomes - out).max(1)
        assert dist.min() < 1e-10
        hit.add(tuple(np.round(outcomes[dist.argmin()], 9)))
    assert len(hit) > 1


@pytest.mark.parametrize('column', [(3.0, -1.0), (2.0, -5.0, 1.0), (-1.0, 0.5, 0.25, -2.0)])
def test_plain_pcgrad_zeroes_conflicting_1d_gradients(column):
    """In one dimension projecting on the normal of a conflicting g_j removes g_i entirely."""
    g = torch.tensor(column, dtype=torch.float64)[:, None, None].expand(-1, 50, 1).contiguous()
    out = PCGrad().combine(g, generator=gen(0), problem_dims=1)
    torch.testing.assert_close(out, torch.zeros_like(out), rtol=0, atol=1e-12)   # up to rounding


def test_plain_pcgrad_1d_without_conflict_is_the_sum():
    g = torch.tensor([[3.0], [1.0], [0.5]], dtype=torch.float64)
    torch.testing.assert_close(PCGrad().combine(g, generator=gen(0)), g.sum(0))


def test_iterative_pcgrad_differs_in_1d():
    """(3, -1): whichever task is processed first is zeroed, the second then does not conflict and survives,
    so the result is -1 or 3 with probability 1/2 each -- never the 0 of plain PCGrad."""
    n_rep = 4000
    g = torch.tensor([3.0, -1.0], dtype=torch.float64)[:, None, None].expand(-1, n_rep, 1).contiguous()
    out = PCGrad(iterative=True).combine(g, generator=gen(1), problem_dims=1)[:, 0]
    assert bool(((out == 3.0) | (out == -1.0)).all())
    frac = (out == 3.0).double().mean().item()
    assert abs(frac - 0.5) <= 5 * (0.25 / n_rep) ** 0.5


@pytest.mark.parametrize('iterative', [False, True])
def test_a_problem_alone_equals_the_problem_in_a_batch(iterative):
    g = random_grads(8, (4, 5, 3, 2))                 # 5 problems of shape [3, 2]
    seeds = [40 + r for r in range(5)]
    batch = PCGrad(iterative=iterative).combine(g, generator=[gen(s) for s in seeds], problem_dims=1)
    for r, s in enumerate(seeds):
        solo = PCGrad(iterative=iterative).combine(g[:, r], generator=gen(s))
        torch.testing.assert_close(batch[r], solo, rtol=1e-12, atol=1e-12)
        others, outer = pcgrad_orders(s, 4, iterative)
        np.testing.assert_allclose(batch[r].reshape(-1).numpy(),
                                   pcgrad_reference(g[:, r].reshape(4, -1).numpy(), others, outer, iterative),
                                   rtol=1e-10, atol=1e-10)


def test_one_task_and_zero_gradients():
    g = random_grads(9, (1, 3, 4))
    torch.testing.assert_close(PCGrad().combine(g), g[0])
    g = random_grads(10, (3, 6))
    g[1] = 0.0
    for iterative in (False, True):
        out = PCGrad(iterative=iterative).combine(g, generator=gen(2))
        assert bool(torch.isfinite(out).all())
        others, outer = pcgrad_orders(2, 3, iterative)
        np.testing.assert_allclose(out.numpy(), pcgrad_reference(g.numpy(), others, outer, iterative),
                                   rtol=1e-10, atol=1e-12)


def test_conflict_statistic_and_input_untouched():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]])   # pairs: (0,1) conflict, (0,2) 0, (1,2) agree
    before = g.clone()
    method = PCGrad()
    out = method.combine(g, generator=gen(0))
    assert out.dtype == torch.float32
    assert torch.equal(g, before)
    assert method.last_stats()['conflict_pairs_frac'] == pytest.approx(1 / 3)


def test_iterative_pcgrad_stays_bounded_when_projections_cancel():
    """Regression: in 1-D a projected gradient can cancel to rounding noise; projecting onto it must not blow up
    (the sine study hit NaN weights before near-zero projected gradients were treated as zero)."""
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        g = torch.randn(5, 64, generator=gen) * torch.logspace(-6, 2, 5)[:, None]
        out = PCGrad(iterative=True).combine(g, problem_dims=1, generator=gen)
        assert torch.isfinite(out).all()
        assert (out.abs() <= g.abs().sum(0) * (1 + 1e-5)).all()
