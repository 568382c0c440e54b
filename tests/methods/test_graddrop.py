"""GradDrop and RandomGradDrop: the masking rule, leak, batch-separated variant, norm keeping, problems, errors.

Reference values come from a direct evaluation of the paper's formula sum_i (l_i + (1 - l_i) M_i) G_i with the
same uniform draw U as the method: GradDrop draws ``torch.rand((n_problems, *P.shape[problem_dims:]))`` from the
generator, so the test reproduces U from a generator with the same seed.
"""
from __future__ import annotations

import math

import pytest
import torch

from graddrop_mtl.methods import GradDrop, RandomGradDrop
from graddrop_mtl.methods.base import coin_flips

from ._util import gen


def reference_graddrop(grads: torch.Tensor, u: torch.Tensor, *, k: float = 1.0, leak=0.0, eps: float = 1e-7,
                       signal: torch.Tensor | None = None, keep_zero: bool = False) -> torch.Tensor:
    """The formula, task by task. ``signal`` (default: ``grads``) gives the purity and signs (H_i for the
    batch-separated variant; the masks then broadcast over the batch)."""
    signal = grads if signal is None else signal
    n_tasks = grads.shape[0]
    leaks = [float(leak)] * n_tasks if isinstance(leak, (int, float)) else [float(v) for v in leak]
    purity = 0.5 * (1 + signal.sum(0) / (signal.abs().sum(0) + eps))
    f = (k * (purity - 0.5) + 0.5).clamp(0, 1)
    out = torch.zeros_like(grads[0])
    for i in range(n_tasks):
        m = ((f > u) & (signal[i] > 0)) | ((f < u) & (signal[i] < 0))
        if keep_zero:
            m = m | (signal[i] == 0)
        out = out + (leaks[i] + (1 - leaks[i]) * m.to(grads.dtype)) * grads[i]
    return out


def draw_u(seed: int, shape: tuple[int, ...], dtype=torch.float64) -> torch.Tensor:
    """The U the method draws for one problem of ``shape`` from ``gen(seed)``."""
    return torch.rand((1,) + shape, generator=gen(seed), dtype=dtype).reshape(shape)


def random_grads(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=torch.float64)


# -- the masking rule -------------------------------------------------------------------------------------------
def test_matches_the_formula_with_the_same_draw():
    grads = random_grads(0, (4, 3, 7))
    out = GradDrop().combine(grads, generator=gen(11))
    torch.testing.assert_close(out, reference_graddrop(grads, draw_u(11, (3, 7))), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('k', [0.0, 0.25, 1.0, 3.0])
def test_each_element_keeps_exactly_one_sign(k):
    """With leak 0 each output element is the sum of the positive parts or the sum of the negative parts."""
    grads = random_grads(1, (5, 2000))
    pos = grads.clamp_min(0).sum(0)
    neg = grads.clamp_max(0).sum(0)
    out = GradDrop(k=k).combine(grads, generator=gen(2))
    is_pos = torch.isclose(out, pos, rtol=0, atol=1e-12)
    is_neg = torch.isclose(out, neg, rtol=0, atol=1e-12)
    assert bool((is_pos | is_neg).all())
    # both outcomes occur (the rule is random, not always one side)
    assert bool(is_pos.any()) and bool(is_neg.any())


def test_k1_is_an_unbiased_estimate_of_the_sum():
    """E[GradDrop(G)] = sum_i G_i elementwise; the output is pos w.p. P, neg w.p. 1 - P."""
    n_rep = 20000
    base = random_grads(3, (4, 30))
    grads = base[:, None, :].expand(-1, n_rep, -1).contiguous()
    out = GradDrop(k=1.0).combine(grads, generator=gen(4))
    pos, neg = base.clamp_min(0).sum(0), base.clamp_max(0).sum(0)
    purity = pos / (pos - neg)
    se = (purity * (1 - purity)).sqrt() * (pos - neg) / math.sqrt(n_rep)
    err = (out.mean(0) - base.sum(0)).abs()
    assert bool((err <= 5 * se + 1e-12).all()), (err / se).max()


def test_k_zero_keeps_each_side_half_the_time():
    """With k = 0 each side survives with probability 1/2 whatever the purity (here P = 0.7)."""
    n_rep = 20000
    base = torch.tensor([[7.0], [-3.0]], dtype=torch.float64)
    grads = base[:, None, :].expand(-1, n_rep, -1).contiguous()
    out = GradDrop(k=0.0).combine(grads, generator=gen(5))
    frac_pos = (out == 7.0).double().mean().item()
    assert abs(frac_pos - 0.5) <= 5 * math.sqrt(0.25 / n_rep)


def test_worked_examples_of_the_purity():
    """METHODS.md: gradients (3, 1) give P = 1.0 and (7, -3) give P = 0.7."""
    seen = []

    def record(purity):
        seen.append(purity.clone())
        return purity

    grads = torch.tensor([[3.0, 7.0], [1.0, -3.0]], dtype=torch.float64)
    method = GradDrop(activation_fn=record)
    method.combine(grads, generator=gen(0))
    torch.testing.assert_close(seen[0], torch.tensor([1.0, 0.7], dtype=torch.float64), rtol=0, atol=1e-7)
    stats = method.last_stats()
    assert stats['sign_purity'] == pytest.approx((0.5 + 0.2) / 2, abs=1e-6)
    assert stats['conflict_frac'] == pytest.approx(0.5)


def test_worked_examples_of_the_outcomes():
    """(3, 1): P = 1, the sum 4 always survives. (7, -3): 7 survives with probability 0.7, else -3."""
    n_rep = 40000
    grads = torch.tensor([[3.0, 7.0], [1.0, -3.0]], dtype=torch.float64)[:, None, :].expand(-1, n_rep, -1)
    out = GradDrop().combine(grads.contiguous(), generator=gen(6))
    assert bool((out[:, 0] == 4.0).all())
    assert bool(((out[:, 1] == 7.0) | (out[:, 1] == -3.0)).all())
    frac = (out[:, 1] == 7.0).double().mean().item()
    assert abs(frac - 0.7) <= 5 * math.sqrt(0.21 / n_rep)


def test_custom_activation_fn_overrides_k():
    grads = random_grads(7, (3, 500))
    # f(P) = 1[P > 1/2] (steepest member of the family): always keep the majority sign
    out = GradDrop(k=0.0, activation_fn=lambda p: (p > 0.5).to(p.dtype)).combine(grads, generator=gen(1))
    pos, neg = grads.clamp_min(0).sum(0), grads.clamp_max(0).sum(0)
    torch.testing.assert_close(out, torch.where(pos > -neg, pos, neg))


# -- leak ---------------------------------------------------------------------------------------------------------
def test_leak_one_gives_the_plain_sum():
    grads = random_grads(8, (3, 4, 5))
    torch.testing.assert_close(GradDrop(leak=1.0).combine(grads, generator=gen(0)), grads.sum(0))
    torch.testing.assert_close(GradDrop(leak=[1, 1, 1]).combine(grads, generator=gen(0)), grads.sum(0))


@pytest.mark.parametrize('leak', [[0.0, 0.3, 1.0], [0.5, 0.0, 0.25], 0.4])
def test_leak_matches_the_formula(leak):
    grads = random_grads(9, (3, 6, 8))
    out = GradDrop(leak=leak).combine(grads, generator=gen(12))
    torch.testing.assert_close(out, reference_graddrop(grads, draw_u(12, (6, 8)), leak=leak), rtol=1e-12,
                               atol=1e-12)


def test_source_leak_one_target_leak_zero_keeps_the_source_whole():
    """The appendix's transfer setting (l_source = 1, l_target = 0): the source gradient always passes."""
    grads = random_grads(10, (2, 1000))
    out = GradDrop(leak=[1.0, 0.0]).combine(grads, generator=gen(3))
    rest = out - grads[0]
    assert bool(((rest == 0) | torch.isclose(rest, grads[1])).all())
    assert bool((rest == 0).any()) and bool((rest != 0).any())


def test_wrong_leak_length_names_the_counts():
    with pytest.raises(ValueError, match=r'2 values.*3 tasks'):
        GradDrop(leak=[0.1, 0.2]).combine(random_grads(0, (3, 4)))


@pytest.mark.parametrize('kwargs', [dict(leak=1.5), dict(leak=[0.0, -0.1]), dict(k=-1.0)])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match='GradDrop'):
        GradDrop(**kwargs)


# -- batch-separated variant ----------------------------------------------------------------------------------------
# A hand-worked example: batch B = 2, F = 4 feature positions, T = 2 tasks.
#   sign(A) = [[1, -1, 1, 1], [1, 1, -1, 1]]
#   H_1 = sum_b sign(A_b) G_1b = [1+1, -2-1, 1+2, 1-1]       = [2, -3, 3, 0]
#   H_2 = sum_b sign(A_b) G_2b = [-2-1, -1+0.5, 0.5-1, 2+1]  = [-3, -0.5, -0.5, 3]
#   P   = (0.4, 0, 6/7, 1): column 0 keeps the negative side (task 2), column 1 the negative side (both tasks),
#   column 2 the positive side (task 1, whose per-example gradients have both signs), column 3 the positive side
#   (task 2; task 1 has H = 0, dropped unless keep_zero).
BS_ACT = torch.tensor([[1.0, -2.0, 1.0, 1.0], [3.0, 1.0, -1.0, 1.0]], dtype=torch.float64)
BS_GRADS = torch.tensor([[[1.0, 2.0, 1.0, 1.0], [1.0, -1.0, -2.0, -1.0]],
                         [[-2.0, 1.0, 0.5, 2.0], [-1.0, 0.5, 1.0, 1.0]]], dtype=torch.float64)
BS_H = torch.tensor([[2.0, -3.0, 3.0, 0.0], [-3.0, -0.5, -0.5, 3.0]], dtype=torch.float64)


def test_batch_separated_hand_worked_example():
    # a very steep f forces f(P) to 0 or 1: the outcome no longer depends on U
    out = GradDrop(k=1e4, batch_separated=True).combine(BS_GRADS, activation=BS_ACT, generator=gen(0))
    expected = torch.tensor([[-2.0, 3.0, 1.0, 2.0], [-1.0, -0.5, -2.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    out_kz = GradDrop(k=1e4, batch_separated=True, keep_zero=True).combine(BS_GRADS, activation=BS_ACT,
                                                                           generator=gen(0))
    expected[:, 3] = BS_GRADS[0, :, 3] + BS_GRADS[1, :, 3]     # task 1's H = 0 is kept too
    torch.testing.assert_close(out_kz, expected, rtol=0, atol=1e-12)


def test_batch_separated_signal_is_h():
    assert torch.equal((BS_GRADS * BS_ACT.sign()).sum(1), BS_H)   # the hand computation above


@pytest.mark.parametrize('seed', range(5))
@pytest.mark.parametrize('leak', [0.0, [0.5, 0.0]])
def test_batch_separated_with_a_controlled_u(seed, leak):
    """k = 1 with U reproduced from the seed: one U per feature position, masks from H broadcast over the batch."""
    u = draw_u(seed, (1, 4))
    out = GradDrop(batch_separated=True, leak=leak).combine(BS_GRADS, activation=BS_ACT, generator=gen(seed))
    expected = reference_graddrop(BS_GRADS, u, signal=BS_H[:, None, :], leak=leak)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_batch_separated_random_inputs_match_the_formula():
    act = random_grads(20, (5, 3, 4))
    grads = random_grads(21, (3, 5, 3, 4))
    h = (grads * act.sign()).sum(1, keepdim=True)
    for keep_zero in (False, True):
        out = GradDrop(k=0.5, batch_separated=True, keep_zero=keep_zero).combine(grads, activation=act,
                                                                                 generator=gen(22))
        expected = reference_graddrop(grads, draw_u(22, (1, 3, 4)), k=0.5, signal=h, keep_zero=keep_zero)
        torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_batch_separated_needs_a_matching_activation():
    with pytest.raises(ValueError, match='activation'):
        GradDrop(batch_separated=True).combine(BS_GRADS)
    with pytest.raises(ValueError, match=r'\(3, 4\).*\(2, 4\)'):
        GradDrop(batch_separated=True).combine(BS_GRADS, activation=torch.ones(3, 4, dtype=torch.float64))


# -- keep_grad_norm and keep_zero -----------------------------------------------------------------------------------
def test_keep_grad_norm_keeps_the_norm_of_the_plain_sum():
    grads = random_grads(30, (4, 6, 9))
    plain = GradDrop().combine(grads, generator=gen(1))
    kept = GradDrop(keep_grad_norm=True).combine(grads, generator=gen(1))
    assert kept.norm().item() == pytest.approx(grads.sum(0).norm().item(), rel=1e-12)
    torch.testing.assert_close(kept, plain * (grads.sum(0).norm() / plain.norm()))


def test_keep_grad_norm_per_problem():
    grads = random_grads(31, (3, 5, 8))
    out = GradDrop(keep_grad_norm=True).combine(grads, generator=gen(2), problem_dims=1)
    torch.testing.assert_close(out.norm(dim=1), grads.sum(0).norm(dim=1))


def test_keep_grad_norm_of_a_fully_dropped_output_is_zero():
    """All-zero gradients: the rescale to the (zero) norm of the sum must not divide by zero."""
    grads = torch.zeros(3, 4, dtype=torch.float64)
    out = GradDrop(keep_grad_norm=True).combine(grads, generator=gen(0))
    assert torch.equal(out, torch.zeros(4, dtype=torch.float64))


def test_keep_zero_changes_nothing_outside_the_batch_separated_variant():
    grads = random_grads(32, (3, 50))
    grads[1, ::3] = 0.0
    a = GradDrop().combine(grads, generator=gen(4))
    b = GradDrop(keep_zero=True).combine(grads, generator=gen(4))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


# -- RandomGradDrop ---------------------------------------------------------------------------------------------------
def test_random_graddrop_keeps_the_positive_mass_where_its_coin_says_so():
    """Element by element, RGD returns the positive mass where the generator's coin (coin_flips, drawn as GradDrop
    draws its uniforms) is True and the negative mass where it is False: the rule of GradDrop(k=0), f(P) = 1/2."""
    grads = random_grads(40, (3, 7, 5))
    grads[:, 0, 0] = 0.0                      # no gradient at all: both masses are 0
    out = RandomGradDrop().combine(grads, generator=gen(9))
    coin = coin_flips((7, 5), gen(9), device=grads.device)
    pos, neg = grads.clamp_min(0).sum(0), grads.clamp_max(0).sum(0)
    torch.testing.assert_close(out, torch.where(coin, pos, neg), rtol=0, atol=1e-12)
    assert 0 < int(coin.sum()) < coin.numel()
    # one task: the coin keeps a positive gradient where True and a negative one where False
    one = random_grads(41, (1, 200))
    out1 = RandomGradDrop().combine(one, generator=gen(3))
    coin1 = coin_flips((200,), gen(3), device=one.device)
    torch.testing.assert_close(out1, one[0] * torch.where(one[0] > 0, coin1, ~coin1), rtol=0, atol=0)


def test_coin_flips_are_fair_reproducible_and_per_problem():
    a = coin_flips((3, 1001), gen(5), device=torch.device('cpu'))
    assert a.dtype == torch.bool and a.shape == (3, 1001)
    assert torch.equal(a, coin_flips((3, 1001), gen(5), device=torch.device('cpu')))
    n = 200_000
    frac = coin_flips((n,), gen(6), device=torch.device('cpu')).double().mean().item()
    assert abs(frac - 0.5) <= 5 * math.sqrt(0.25 / n)
    # neighbouring bits of one byte are independent: the pair (c_j, c_j+1) takes its four values equally often
    c = coin_flips((n,), gen(7), device=torch.device('cpu')).long()
    pairs = torch.bincount(2 * c[:-1] + c[1:], minlength=4).double() / (n - 1)
    assert float((pairs - 0.25).abs().max()) <= 5 * math.sqrt(0.25 * 0.75 / n)
    # one generator per problem: problem 1 alone draws what it draws among others
    gens = [gen(10 + p) for p in range(3)]
    together = coin_flips((3, 77), gens, device=torch.device('cpu'))
    alone = coin_flips((77,), gen(11), device=torch.device('cpu'))
    assert torch.equal(together[1], alone)
    with pytest.raises(ValueError, match='2 generators given for 3 problems'):
        coin_flips((3, 5), gens[:2], device=torch.device('cpu'))


@pytest.mark.parametrize('column', [(3.0, 1.0), (7.0, -3.0), (1.0, -9.0)])
def test_random_graddrop_keeps_the_positive_side_half_the_time(column):
    """Whatever the purity (1.0, 0.7, 0.1 here), the positive side survives with probability 1/2."""
    n_rep = 20000
    grads = torch.tensor(column, dtype=torch.float64)[:, None].expand(-1, n_rep).contiguous()
    out = RandomGradDrop().combine(grads, generator=gen(8))
    pos = sum(v for v in column if v > 0)
    frac = (out == pos).double().mean().item()
    assert abs(frac - 0.5) <= 5 * math.sqrt(0.25 / n_rep)


def test_random_graddrop_leak_and_batch_separated():
    # the coin as the U of the k = 0 rule (f(P) = 1/2): below 1/2 keeps the positive sign, above it the negative
    coin = coin_flips((1, 1, 4), gen(3), device=torch.device('cpu')).reshape(1, 4)
    u = torch.where(coin, 0.25, 0.75).double()
    out = RandomGradDrop(leak=[0.0, 0.5], batch_separated=True).combine(BS_GRADS, activation=BS_ACT,
                                                                        generator=gen(3))
    expected = reference_graddrop(BS_GRADS, u, k=0.0, signal=BS_H[:, None, :], leak=[0.0, 0.5])
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


# -- problems and per-problem generators --------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs', [dict(), dict(k=0.25, leak=[0.2, 0.0, 0.7]), dict(keep_grad_norm=True)])
def test_a_problem_alone_equals_the_problem_in_a_batch(kwargs):
    grads = random_grads(50, (3, 6, 2, 5))           # 6 independent problems of shape [2, 5]
    seeds = [100 + r for r in range(6)]
    batch = GradDrop(**kwargs).combine(grads, generator=[gen(s) for s in seeds], problem_dims=1)
    for r, s in enumerate(seeds):
        alone = GradDrop(**kwargs).combine(grads[:, r:r + 1], generator=[gen(s)], problem_dims=1)
        torch.testing.assert_close(batch[r:r + 1], alone, rtol=0, atol=1e-12)
        solo = GradDrop(**kwargs).combine(grads[:, r], generator=gen(s))   # no problem dims at all
        torch.testing.assert_close(batch[r], solo, rtol=0, atol=1e-12)


def test_batch_separated_problem_alone_equals_in_batch():
    act = random_grads(51, (4, 3, 6))                # 4 problems, batch 3, 6 features
    grads = random_grads(52, (2, 4, 3, 6))
    seeds = [7, 8, 9, 10]
    batch = GradDrop(batch_separated=True).combine(grads, activation=act, generator=[gen(s) for s in seeds],
                                                   problem_dims=1)
    for r, s in enumerate(seeds):
        solo = GradDrop(batch_separated=True).combine(grads[:, r], activation=act[r], generator=gen(s))
        torch.testing.assert_close(batch[r], solo, rtol=0, atol=1e-12)


def test_wrong_number_of_generators():
    with pytest.raises(ValueError, match='2 generators given for 3 problems'):
        GradDrop().combine(random_grads(0, (2, 3, 4)), generator=[gen(0), gen(1)], problem_dims=1)


def test_does_not_modify_its_input_and_keeps_dtype():
    grads = torch.randn(3, 4, 5, generator=gen(0))
    before = grads.clone()
    for method in (GradDrop(), GradDrop(leak=0.5, keep_grad_norm=True), RandomGradDrop()):
        out = method.combine(grads, generator=gen(1))
        assert out.dtype == torch.float32 and out.shape == (4, 5)
    assert torch.equal(grads, before)


def test_kept_fraction_statistics():
    # columns: (2, 0) P = 1 keeps task 0 (task 1's zero is not counted); (-1, -3) P = 0 keeps both;
    # (3, -1) P = 0.75 keeps task 0 only (f forced to 1 by the steep k)
    grads = torch.tensor([[2.0, -1.0, 3.0], [0.0, -3.0, -1.0]], dtype=torch.float64)
    method = GradDrop(k=1e4)
    method.combine(grads, generator=gen(0))
    stats = method.last_stats()
    assert stats['kept_frac_0'] == pytest.approx(1.0)
    assert stats['kept_frac_1'] == pytest.approx(0.5)
    assert stats['conflict_frac'] == pytest.approx(1 / 3)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64, torch.bfloat16])
def test_sign_counts_match_boolean_counts_across_chunks(monkeypatch, dtype):
    import graddrop_mtl.methods.graddrop as module
    monkeypatch.setattr(module, 'SIGN_COUNT_CHUNK', 64)   # chunks of 12 columns, a ragged last one
    g = gen(3)
    x = torch.randn(5, 1000, generator=g).to(dtype)
    x[torch.rand(5, 1000, generator=g) < 0.3] = 0
    survivor = torch.randint(-1, 2, (1000,), generator=g).to(dtype)
    kept, nonzero = module.sign_counts(x, survivor)
    assert torch.equal(kept, ((x.float() * survivor.float()) > 0).sum(1))
    assert torch.equal(nonzero, (x != 0).sum(1))
    assert kept.dtype == nonzero.dtype == torch.long


def test_kept_fraction_counts_the_surviving_signs():
    g = gen(4)
    grads = torch.randn(6, 4, 50, generator=g)
    grads[:, :, :10] = 0                                   # zeros are neither kept nor counted
    method = GradDrop()
    out = method.combine(grads, generator=gen(5))
    stats = method.last_stats()
    for i in range(6):
        nz = grads[i] != 0
        kept = nz & (grads[i] * out > 0)                   # without leaks, a task's sign survives where out has it
        assert stats[f'kept_frac_{i}'] == pytest.approx(kept.sum().item() / nz.sum().item())
