"""Any plain Pyro model, written for one draw, runs on the many-chain path (vmap, recorded
value and gradient) and recovers its exact posterior; data keep the dtypes a user expects;
warmup stops early on an easy posterior and keeps going on a hard one.

Tolerances: means within 4 MCSE of the exact mean (a false alarm about once in 16,000 per
coordinate), sds within 10% (with ≥1000 effective draws the sd's own Monte Carlo error is
≈2%, so 10% is five standard errors).
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import zoo
from zoo.diagnostics import _mcse_mean


def check_against(fit, name: str, mean: np.ndarray, sd: np.ndarray) -> None:
    draws = np.asarray(fit.posterior[name], dtype=float)
    flat = draws.reshape(draws.shape[0], draws.shape[1], -1)
    for i in range(flat.shape[-1]):
        x = flat[..., i]
        mcse = _mcse_mean(x)
        assert abs(x.mean() - mean.ravel()[i]) < 4 * mcse, (name, i, x.mean(), mean.ravel()[i], mcse)
        assert abs(x.std() / sd.ravel()[i] - 1) < 0.10, (name, i, x.std(), sd.ravel()[i])


def gaussian_posterior(prior_cov: np.ndarray, A: np.ndarray, noise: float, y: np.ndarray):
    """Exact posterior of θ ~ N(0, prior_cov), y ~ N(A θ, noise² I): (mean, cov)."""
    precision = np.linalg.inv(prior_cov) + A.T @ A / noise**2
    cov = np.linalg.inv(precision)
    return cov @ A.T @ y / noise**2, cov


def assert_many_chain(fit) -> None:
    assert fit.method == "chees" and "fallback" not in fit.info, fit.info.get("fallback")
    assert fit.info["log_density"].startswith("vmap"), fit.info["log_density"]
    assert fit.converged, fit.checks()


def test_matrix_product_model_matches_exact():
    # `X @ beta` does not broadcast under an outer plate of chains; vmap needs no such care
    rng = np.random.default_rng(0)
    X, beta = rng.normal(size=(40, 3)), np.array([1.0, -0.5, 0.25])
    y = X @ beta + rng.normal(0, 0.5, size=40)

    def regression(X, y=None):
        b = pyro.sample("beta", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
        with pyro.plate("data", X.shape[0]):
            pyro.sample("y", dist.Normal(X @ b, 0.5), obs=y)

    fit = zoo.fit(regression, {"X": X, "y": y}, seed=0)
    assert_many_chain(fit)
    mean, cov = gaussian_posterior(np.eye(3), X, 0.5, y)
    check_against(fit, "beta", mean, np.sqrt(np.diag(cov)))


def test_integer_index_model_matches_exact_and_keeps_int64():
    # `a[g]` with an integer g: the index stays int64 from a numpy array to the model
    rng = np.random.default_rng(1)
    g = rng.integers(0, 4, size=30)
    y = np.array([0.0, 1.0, -1.0, 2.0])[g] + rng.normal(0, 1.0, size=30)

    def groups(g, y=None):
        with pyro.plate("groups", 4):
            a = pyro.sample("a", dist.Normal(0.0, 2.0))
        with pyro.plate("data", len(g)):
            pyro.sample("y", dist.Normal(a[g], 1.0), obs=y)

    fit = zoo.fit(groups, {"g": g, "y": y}, seed=0)
    assert fit.data["g"].dtype == torch.int64 and fit.data["y"].dtype == torch.float64
    assert_many_chain(fit)
    A = np.eye(4)[g]
    mean, cov = gaussian_posterior(4.0 * np.eye(4), A, 1.0, y)
    check_against(fit, "a", mean, np.sqrt(np.diag(cov)))


def test_factor_likelihood_matches_exact():
    # a `pyro.factor` likelihood, as Stan ports write `target +=`
    y = np.array([0.3, 1.1, -0.4, 0.8, 1.6])

    def factor_model(y):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        pyro.factor("likelihood", dist.Normal(mu, 0.5).log_prob(y).sum())

    fit = zoo.fit(factor_model, {"y": y}, seed=0)
    assert_many_chain(fit)
    mean, cov = gaussian_posterior(np.eye(1), np.ones((5, 1)), 0.5, y)
    check_against(fit, "mu", mean, np.sqrt(np.diag(cov)))


def test_loop_over_time_matches_exact():
    # a Python loop over time with a latent state per step (a Gaussian random walk)
    y = np.array([0.5, 1.2, 0.7, 1.9, 2.4, 2.0])
    T, q, r = len(y), 0.7, 0.5

    def random_walk(y):
        x = pyro.sample("x_0", dist.Normal(0.0, 1.0))
        pyro.sample("y_0", dist.Normal(x, r), obs=y[0])
        for t in range(1, T):
            x = pyro.sample(f"x_{t}", dist.Normal(x, q))
            pyro.sample(f"y_{t}", dist.Normal(x, r), obs=y[t])

    fit = zoo.fit(random_walk, {"y": y}, seed=0)
    assert_many_chain(fit)
    # x = L ε with ε ~ N(0, I): the walk's prior covariance is L Lᵀ
    L = np.tril(np.ones((T, T))) * np.array([1.0] + [q] * (T - 1))
    mean, cov = gaussian_posterior(L @ L.T, np.eye(T), r, y)
    for t in range(T):
        check_against(fit, f"x_{t}", mean[t:t + 1], np.sqrt(cov[t, t:t + 1]))


def test_an_int_list_of_coin_flips_fits():
    flips = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1]

    def coin(y):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        with pyro.plate("flips", len(y)):
            pyro.sample("y", dist.Bernoulli(p), obs=y)

    fit = zoo.fit(coin, {"y": flips}, seed=0)
    assert fit.data["y"].dtype == torch.float64  # observed values take the fit's float dtype
    assert_many_chain(fit)
    exact = torch.distributions.Beta(2.0 + 7, 2.0 + 3)
    check_against(fit, "p", np.array([float(exact.mean)]), np.array([float(exact.stddev)]))


def test_integer_covariates_that_the_model_multiplies_become_float():
    # an integer matrix used in `X @ beta` cannot stay int64: the data go to float instead
    X = np.arange(12).reshape(6, 2) % 3

    def model(X, y=None):
        b = pyro.sample("b", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with pyro.plate("data", 6):
            pyro.sample("y", dist.Normal(X @ b, 1.0), obs=y)

    fit = zoo.fit(model, {"X": X, "y": np.ones(6)}, seed=0, num_samples=50, num_warmup=100)
    assert fit.data["X"].dtype == torch.float64


def test_adaptive_warmup_stops_early_on_an_easy_posterior_and_not_on_a_hard_one():
    easy = zoo.fit("normal_normal", zoo.load_dataset("normal_synthetic"), seed=0)
    assert easy.info["warmup_stopped_early"] and easy.info["warmup_iterations"] <= 125, easy.info
    # the centered eight schools funnel: the metric and nested R-hat keep moving
    with pytest.warns(zoo.ConvergenceWarning):
        hard = zoo.fit("eight_schools_centered", zoo.load_dataset("eight_schools"), seed=0,
                       num_warmup=400, max_samples=100)
    assert hard.info["warmup_iterations"] > easy.info["warmup_iterations"], hard.info


def test_sampling_stops_at_the_ess_target():
    fit = zoo.fit("normal_normal", zoo.load_dataset("normal_synthetic"), seed=0, target_ess=400)
    checks = fit.checks().set_index("check")
    assert checks.loc["min bulk ESS", "value"] >= 400 and checks.loc["min tail ESS", "value"] >= 400
    assert fit.info["sampling_stopped"].startswith("min ESS")
    # far fewer draws than the old fixed 128 x 100
    assert fit.num_chains * fit.num_draws < 12800


def test_same_seed_same_draws():
    data = zoo.load_dataset("eight_schools")
    a = zoo.fit("eight_schools_noncentered", data, seed=3)
    b = zoo.fit("eight_schools_noncentered", data, seed=3)
    np.testing.assert_array_equal(a.posterior["tau"], b.posterior["tau"])
