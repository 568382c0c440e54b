"""Proposition 3 of the GradDrop appendix (A.1), checked by Monte Carlo in one dimension.

Setting: T scalar task gradients g_i of a 1-D loss, p / n the total positive / negative mass, learning rate 1, so
the first-order loss change of a step along the GradDrop output is dL = -(sum_i g_i) * GradDrop(g). Many
independent elements stand for many independent draws: the activation is a vector of N elements, each holding the
same T gradients, and GradDrop draws one U per element. The appendix claims (eq. 10 and 17), for
f(P) = k (P - 1/2) + 1/2:

    E[dL]   = -0.5 (k + 1) (p - n)^2
    Var[dL] = 0.25 (p - n)^2 ((p - n)^2 (-k^2 - 1) + 2 p^2 + 2 n^2)        (decreasing in k)

Tolerances are a few Monte-Carlo standard errors, computed from the exact two-point law of dL.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from graddrop_mtl.methods import GradDrop, RandomGradDrop

from ._util import gen

N_DRAWS = 400_000
N_SE = 4.5  # a 4.5-sigma band: a false alarm for a correct implementation has probability ~1e-5 per check

GRADIENT_SETS = [
    (2.5, 1.0, -0.75, -0.25, -0.5),   # p = 3.5, n = 1.5
    (-4.0, 1.0, 0.5),                 # p = 1.5, n = 4   (the negative side dominates)
    (0.3, -2.0, 1.7, 0.9, -0.1, 0.6),  # p = 3.5, n = 2.1
]


def masses(g: tuple[float, ...]) -> tuple[float, float]:
    return sum(v for v in g if v > 0), -sum(v for v in g if v < 0)


def keep_positive_prob(p: float, n: float, k: float) -> float:
    purity = p / (p + n)
    return min(max(k * (purity - 0.5) + 0.5, 0.0), 1.0)


def two_point_law(p: float, n: float, k: float) -> tuple[float, float, float]:
    """Exact mean, variance and 4th central moment of dL: -(p-n) p with prob. f(P), (p-n) n otherwise."""
    f = keep_positive_prob(p, n, k)
    a, b = -(p - n) * p, (p - n) * n
    mean = f * a + (1 - f) * b
    c = a - b
    var = f * (1 - f) * c ** 2
    mu4 = f * (1 - f) * c ** 4 * ((1 - f) ** 3 + f ** 3)
    return mean, var, mu4


def eq10_mean(p: float, n: float, k: float) -> float:
    return -0.5 * (k + 1) * (p - n) ** 2


def eq17_variance(p: float, n: float, k: float) -> float:
    return 0.25 * (p - n) ** 2 * ((p - n) ** 2 * (-k ** 2 - 1) + 2 * p ** 2 + 2 * n ** 2)


def sample_loss_changes(g: tuple[float, ...], k: float, seed: int, method=None) -> np.ndarray:
    """dL for N_DRAWS independent elements (float64), lr = 1."""
    grads = torch.tensor(g, dtype=torch.float64)[:, None].expand(-1, N_DRAWS).contiguous()
    method = method or GradDrop(k=k, eps=0.0)
    out = method.combine(grads, generator=gen(seed))
    return (-(grads.sum(0)) * out).numpy()


@pytest.mark.parametrize('g', GRADIENT_SETS)
@pytest.mark.parametrize('k', [0.0, 0.25, 0.5, 1.0, 2.0])
def test_expected_loss_change_is_eq10(g, k):
    p, n = masses(g)
    # k = 2 stays inside the unclipped range for these sets (|P - 1/2| <= 0.25), where eq. 10 still holds.
    assert 0.0 < keep_positive_prob(p, n, k) < 1.0
    dl = sample_loss_changes(g, k, seed=10 + int(100 * k))
    _, var, _ = two_point_law(p, n, k)
    se = math.sqrt(var / N_DRAWS)
    assert abs(dl.mean() - eq10_mean(p, n, k)) <= N_SE * se, (dl.mean(), eq10_mean(p, n, k), se)


@pytest.mark.parametrize('g', GRADIENT_SETS)
def test_k1_matches_sgd_in_expectation(g):
    """Claim 1: with k = 1, E[dL] equals the SGD change -(sum g)^2, i.e. GradDrop is unbiased."""
    dl = sample_loss_changes(g, 1.0, seed=3)
    p, n = masses(g)
    sgd = -sum(g) ** 2
    assert eq10_mean(p, n, 1.0) == pytest.approx(sgd, rel=1e-12)
    se = math.sqrt(two_point_law(p, n, 1.0)[1] / N_DRAWS)
    assert abs(dl.mean() - sgd) <= N_SE * se


@pytest.mark.parametrize('g', GRADIENT_SETS)
@pytest.mark.parametrize('k', [0.0, 0.5, 1.0, 2.0])
def test_variance_is_eq17(g, k):
    p, n = masses(g)
    dl = sample_loss_changes(g, k, seed=20 + int(10 * k))
    _, var, mu4 = two_point_law(p, n, k)
    # First-order standard error of the sample variance, plus the second-order term (p + n)^2 (p - n)^2 / N that
    # dominates at f(P) = 1/2, where the first-order term vanishes (the sample variance of a fair two-point law is
    # c^2 X (1 - X) with X the observed frequency, flat in X at 1/2).
    se_var = math.sqrt((mu4 - var ** 2) / N_DRAWS) + ((p + n) * (p - n)) ** 2 / N_DRAWS
    assert abs(dl.var() - eq17_variance(p, n, k)) <= N_SE * se_var, (dl.var(), eq17_variance(p, n, k), se_var)


def test_eq17_is_the_exact_variance_of_the_two_point_law():
    """The appendix algebra (eq. 11-17) against the variance of the two-point law, on a grid of p, n, k."""
    for p in (0.1, 1.0, 3.5, 7.0):
        for n in (0.0, 0.4, 2.1, 9.0):
            for k in (0.0, 0.3, 0.7, 1.0):
                mean, var, _ = two_point_law(p, n, k)
                assert mean == pytest.approx(eq10_mean(p, n, k), rel=1e-12, abs=1e-12)
                assert var == pytest.approx(eq17_variance(p, n, k), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize('g', GRADIENT_SETS)
def test_variance_decreases_and_magnitude_increases_with_k(g):
    """Claims 2 and 3 on samples drawn with common random numbers (the same seed for every k)."""
    ks = [0.0, 0.5, 1.0, 2.0]
    samples = [sample_loss_changes(g, k, seed=7) for k in ks]
    means = [s.mean() for s in samples]
    variances = [s.var() for s in samples]
    assert all(m < 0 for m in means)
    assert all(b < a for a, b in zip(variances, variances[1:])), variances
    assert all(abs(b) > abs(a) for a, b in zip(means, means[1:])), means
    p, n = masses(g)
    formula = [eq17_variance(p, n, k) for k in ks]
    assert all(b < a for a, b in zip(formula, formula[1:]))


def test_steep_k_clips_to_a_deterministic_step():
    """Past the clip (f(P) = 1) GradDrop always keeps the dominant sign: dL = -(p - n) p with zero variance."""
    g = GRADIENT_SETS[0]
    p, n = masses(g)
    assert keep_positive_prob(p, n, 10.0) == 1.0
    dl = sample_loss_changes(g, 10.0, seed=1)
    np.testing.assert_allclose(dl, -(p - n) * p, rtol=1e-12)


def test_random_graddrop_halves_the_sgd_change():
    """RGD (the rebuttal) is the k = 0 member of the family: E[dL] = -0.5 (p - n)^2, half of SGD's."""
    g = GRADIENT_SETS[2]
    p, n = masses(g)
    dl = sample_loss_changes(g, 0.0, seed=5, method=RandomGradDrop())
    _, var, _ = two_point_law(p, n, 0.0)
    assert abs(dl.mean() - 0.5 * -sum(g) ** 2) <= N_SE * math.sqrt(var / N_DRAWS)
