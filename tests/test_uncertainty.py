"""zoo.uncertainty: the predictive mixtures and their exact aleatoric/epistemic split, checked
against formulas computed independently of the class."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.uncertainty import ClassificationPredictive, RegressionPredictive

S, N, K = 7, 13, 4


@pytest.fixture
def regression() -> RegressionPredictive:
    g = torch.Generator().manual_seed(0)
    mean = 3 * torch.randn(S, N, generator=g, dtype=torch.float64)
    var = torch.rand(S, N, generator=g, dtype=torch.float64) * 2 + 0.05
    return RegressionPredictive(mean, var)


@pytest.fixture
def classification() -> ClassificationPredictive:
    g = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(S, N, K, generator=g, dtype=torch.float64)
    return ClassificationPredictive(torch.softmax(logits, -1))


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


def test_regression_total_is_aleatoric_plus_epistemic_and_the_mixture_variance(regression):
    p = regression
    torch.testing.assert_close(p.total, p.aleatoric + p.epistemic, rtol=1e-14, atol=0)
    # The variance of an equal-weight Gaussian mixture, not using the class: E[σ²+μ²] − (E μ)².
    mixture_var = (p.var + p.mean**2).mean(0) - p.mean.mean(0) ** 2
    torch.testing.assert_close(p.total, mixture_var, rtol=1e-12, atol=1e-12)
    assert (p.epistemic >= 0).all() and (p.aleatoric > 0).all()


def test_regression_single_draw_has_no_epistemic_part():
    mean, var = torch.tensor([[0.5, -1.0]], dtype=torch.float64), torch.tensor([[2.0, 0.3]])
    p = RegressionPredictive(mean, var.double())
    assert torch.equal(p.epistemic, torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(p.total, var[0].double())


def test_regression_log_likelihood_is_the_log_mean_density(regression):
    p = regression
    y = torch.linspace(-4, 4, N, dtype=torch.float64)
    direct = []
    for n in range(N):
        density = sum(math.exp(-(y[n] - p.mean[s, n]) ** 2 / (2 * p.var[s, n]))
                      / math.sqrt(2 * math.pi * p.var[s, n]) for s in range(S)) / S
        direct.append(math.log(density))
    torch.testing.assert_close(p.log_likelihood(y), torch.tensor(direct, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("level", [0.5, 0.9, 0.95, 0.99])
def test_interval_endpoints_have_the_stated_cdf(regression, level):
    lo, hi = regression.interval(level)
    assert (lo < hi).all()
    torch.testing.assert_close(regression.cdf(lo), torch.full((N,), (1 - level) / 2,
                               dtype=torch.float64), rtol=0, atol=1e-6)
    torch.testing.assert_close(regression.cdf(hi), torch.full((N,), (1 + level) / 2,
                               dtype=torch.float64), rtol=0, atol=1e-6)


def test_rescale_is_the_same_distribution_in_original_units(regression):
    p, scale, shift = regression, 2.5, -7.0
    q = p.rescale(scale, shift)
    y = torch.linspace(-3, 3, N, dtype=torch.float64)
    # y_orig = scale · y + shift: the density gains the Jacobian 1/scale.
    torch.testing.assert_close(q.log_likelihood(scale * y + shift),
                               p.log_likelihood(y) - math.log(scale), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q.cdf(scale * y + shift), p.cdf(y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(q.predictive_mean, scale * p.predictive_mean + shift)
    torch.testing.assert_close(q.aleatoric, scale**2 * p.aleatoric)
    torch.testing.assert_close(q.epistemic, scale**2 * p.epistemic)
    lo, hi = p.interval(0.9)
    qlo, qhi = q.interval(0.9)
    torch.testing.assert_close(qlo, scale * lo + shift, rtol=0, atol=1e-8)
    torch.testing.assert_close(qhi, scale * hi + shift, rtol=0, atol=1e-8)
    assert q.rmse(scale * y + shift) == pytest.approx(scale * p.rmse(y), rel=1e-12)


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def test_classification_entropy_splits_into_expected_entropy_and_mutual_information(
        classification):
    p = classification
    torch.testing.assert_close(p.total, p.aleatoric + p.epistemic, rtol=1e-14, atol=1e-14)
    # The mutual information independently: the mean KL of each draw from the average,
    # I = E_s KL(p_s ‖ p̄) = E_s Σ_k p_sk log(p_sk / p̄_k).
    pbar = p.probs.mean(0)
    kl = (p.probs * (p.probs.log() - pbar.log())).sum(-1).mean(0)
    torch.testing.assert_close(p.epistemic, kl, rtol=1e-10, atol=1e-12)
    assert (p.epistemic >= -1e-12).all()
    # Entropy bounds: 0 ≤ H[p̄] ≤ log K.
    assert (p.total >= 0).all() and (p.total <= math.log(K) + 1e-12).all()


def test_mutual_information_is_zero_when_all_draws_agree(classification):
    same = ClassificationPredictive(classification.probs[:1].expand(S, N, K).clone())
    torch.testing.assert_close(same.epistemic, torch.zeros(N, dtype=torch.float64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(same.total, same.aleatoric, rtol=1e-12, atol=1e-12)


def test_classification_log_likelihood_and_accuracy(classification):
    p = classification
    y = torch.arange(N) % K
    direct = [math.log(sum(float(p.probs[s, n, y[n]]) for s in range(S)) / S) for n in range(N)]
    torch.testing.assert_close(p.log_likelihood(y), torch.tensor(direct, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    expected = sum(int(p.probs[:, n].mean(0).argmax() == y[n]) for n in range(N)) / N
    assert p.accuracy(y) == pytest.approx(expected)
