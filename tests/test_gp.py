"""Gaussian-process models against closed forms computed by hand and against pyro.contrib.gp.

The exact GP's log joint is checked against scipy's MultivariateNormal (and its chain-rule
factors against the Gaussian conditioning formula); the sparse GP's density against contrib.gp's
SparseGPRegression and against the exact GP when the inducing points are the inputs; gp_predict
against Rasmussen & Williams eq. 2.25-2.26 and contrib.gp's SparseGPRegression.forward.
"""

from __future__ import annotations

import math

import numpy as np
import pyro.contrib.gp as contrib_gp
import pyro.poutine as poutine
import pytest
import torch
from scipy import stats

import zoo
from zoo.data import prepare
from zoo.errors import ZooError
from zoo.fit import Fit, default_dtype
from zoo.models.gp import (APPROXIMATIONS, JITTER, LENGTHSCALE_CONCENTRATION, LENGTHSCALE_RATE,
                           ChainRuleLowRankMultivariateNormal, ChainRuleMultivariateNormal,
                           covariance, gp_conditional, gp_log_marginal, gp_predict,
                           lengthscale_prior, sparse_gp_log_marginal)

THETA = {"lengthscale": 1.3, "amplitude": 0.8, "sigma": 0.3}  # away from the data's truth


pytestmark = pytest.mark.usefixtures("float64")


def gp_data(**args) -> dict:
    return zoo.load_dataset("gp_synthetic", **args)


def rbf_numpy(x, z, lengthscale, amplitude):
    x, z = np.asarray(x), np.asarray(z)
    return amplitude**2 * np.exp(-0.5 * (x[:, None] - z[None, :]) ** 2 / lengthscale**2)


def conditioned_trace(name: str, data: dict, theta: dict):
    values = {k: torch.tensor(v) for k, v in theta.items()}
    trace = poutine.trace(poutine.condition(zoo.get_model(name).fn, values)).get_trace(**data)
    trace.compute_log_prob()
    return trace


def point_fit(name: str, data: dict, draws: dict[str, list[float]]) -> Fit:
    """A Fit holding the given hyperparameter draws (one chain), to test gp_predict exactly."""
    spec = zoo.get_model(name)
    posterior = {k: np.asarray(v, dtype=float)[None] for k, v in draws.items()}
    return Fit(spec=spec, method="nuts", posterior=posterior, latent_names=list(draws),
               sample_stats={}, data=prepare(spec, data), observed={"y": "y"},
               settings={"dtype": "float64"})


def contrib_kernel(theta: dict, kind=contrib_gp.kernels.RBF):
    return kind(input_dim=1, variance=torch.tensor(theta["amplitude"] ** 2),
                lengthscale=torch.tensor(theta["lengthscale"]))


# --------------------------------------------------------------------------------------------
# Kernels and priors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel,kind", [("rbf", contrib_gp.kernels.RBF),
                                         ("matern52", contrib_gp.kernels.Matern52)])
def test_kernels_match_contrib_gp_and_broadcast(kernel, kind):
    x, z = gp_data()["x"], torch.linspace(-1.0, 11.0, 7)
    ours = covariance(x, z, THETA["lengthscale"], THETA["amplitude"], kernel)
    theirs = contrib_kernel(THETA, kind)(x, z)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    # Hyperparameters shaped (S, 1), as under an outer plate: one matrix per draw.
    lengthscale, amplitude = torch.tensor([[0.4], [2.0]]), torch.tensor([[1.5], [0.7]])
    batched = covariance(x, z, lengthscale, amplitude, kernel)
    assert batched.shape == (2, x.shape[0], 7)
    for s in range(2):
        torch.testing.assert_close(batched[s], covariance(x, z, lengthscale[s, 0], amplitude[s, 0],
                                                          kernel), rtol=1e-14, atol=0)


def test_lengthscale_prior_tails():
    # Betancourt (2017) publishes InverseGamma(8.91924, 34.5805) for 1% below 2 and above 10.
    a, b = lengthscale_prior(2.0, 10.0)
    assert a == pytest.approx(8.91924, abs=1e-5) and b == pytest.approx(34.5805, abs=1e-4)
    # The model's defaults are lengthscale_prior(0.5, 10), rounded to 6 figures.
    a, b = lengthscale_prior(0.5, 10.0)
    assert (a, b) == pytest.approx((LENGTHSCALE_CONCENTRATION, LENGTHSCALE_RATE), rel=1e-5)
    prior = stats.invgamma(LENGTHSCALE_CONCENTRATION, scale=LENGTHSCALE_RATE)
    assert prior.cdf(0.5) == pytest.approx(0.01, abs=1e-6)
    assert prior.sf(10.0) == pytest.approx(0.01, abs=1e-6)
    with pytest.raises(ZooError, match="lower < upper"):
        lengthscale_prior(10.0, 2.0)


# --------------------------------------------------------------------------------------------
# The exact GP: log joint by hand
# --------------------------------------------------------------------------------------------


def test_exact_log_joint_equals_closed_form():
    data = gp_data()
    x, y = data["x"].numpy(), data["y"].numpy()
    trace = conditioned_trace("gp_regression", data, THETA)
    cov = rbf_numpy(x, x, THETA["lengthscale"], THETA["amplitude"])
    cov += (THETA["sigma"] ** 2 + JITTER) * np.eye(len(x))
    lengthscale_prior = stats.invgamma(LENGTHSCALE_CONCENTRATION, scale=LENGTHSCALE_RATE)
    by_hand = (stats.multivariate_normal(np.zeros(len(x)), cov).logpdf(y)
               + lengthscale_prior.logpdf(THETA["lengthscale"])
               + stats.halfnorm(scale=2.0).logpdf(THETA["amplitude"])
               + stats.halfnorm(scale=1.0).logpdf(THETA["sigma"]))
    assert float(trace.log_prob_sum()) == pytest.approx(by_hand, abs=1e-8)
    # The pointwise log-likelihood is the chain rule: log N(y_i | y_<i) by Gaussian conditioning.
    pointwise = trace.nodes["y"]["log_prob"].numpy()
    for i in (0, 1, 17, len(x) - 1):
        k = cov[i, :i]
        mean = k @ np.linalg.solve(cov[:i, :i], y[:i]) if i else 0.0
        var = cov[i, i] - (k @ np.linalg.solve(cov[:i, :i], k) if i else 0.0)
        want = stats.norm(mean, math.sqrt(var)).logpdf(y[i])
        assert pointwise[i] == pytest.approx(want, abs=1e-9)


def test_exact_marginal_matches_contrib_gp_regression():
    data = gp_data()
    model = contrib_gp.models.GPRegression(data["x"], data["y"], contrib_kernel(THETA),
                                           noise=torch.tensor(THETA["sigma"] ** 2))
    theirs = poutine.trace(model.model).get_trace().log_prob_sum().detach()
    ours = gp_log_marginal(data["x"], data["y"], **THETA)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-10)


# --------------------------------------------------------------------------------------------
# The sparse GP
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("approx", APPROXIMATIONS)
def test_sparse_density_matches_contrib_sparse_gp_regression(approx):
    # contrib.gp's collapsed density (with VFE's trace term) = sparse_gp_log_marginal = the
    # model's likelihood (y's chain-rule factors plus the trace_term factor) at fixed θ.
    data = gp_data()
    xu = torch.linspace(0.5, 9.5, 9)
    model = contrib_gp.models.SparseGPRegression(data["x"], data["y"], contrib_kernel(THETA), xu,
                                                 noise=torch.tensor(THETA["sigma"] ** 2),
                                                 approx=approx)
    theirs = float(poutine.trace(model.model).get_trace().log_prob_sum().detach())
    ours = float(sparse_gp_log_marginal(data["x"], data["y"], **THETA, inducing_points=xu,
                                        approx=approx))
    trace = conditioned_trace("sparse_gp_regression",
                              {**data, "inducing_points": xu, "approx": approx}, THETA)
    likelihood = sum(float(s["log_prob_sum"]) for n, s in trace.nodes.items()
                     if n in ("y", "trace_term"))
    assert ours == pytest.approx(theirs, abs=1e-10)
    assert likelihood == pytest.approx(theirs, abs=1e-10)


def test_sparse_equals_exact_at_the_inputs_and_approaches_it():
    # Identity: with inducing points Xu = x (and no jitter), Q_ff = K_fu K_uu⁻¹ K_uf = K_ff, so
    # D is sigma² I for all three approximations and VFE's trace term tr(K_ff - Q_ff) is 0:
    # log p_DTC = log p_VFE = log p_FITC = log N(y | 0, K_ff + sigma² I). Lengthscale 0.3 keeps
    # K_ff invertible without jitter (rounding then costs ~1e-13; tolerance 1e-8).
    data = gp_data()
    x, y = data["x"], data["y"]
    theta = {"lengthscale": 0.3, "amplitude": 1.0, "sigma": 0.25}
    exact = float(gp_log_marginal(x, y, **theta, jitter=0.0))
    for approx in APPROXIMATIONS:
        at_inputs = float(sparse_gp_log_marginal(x, y, **theta, inducing_points=x, approx=approx,
                                                 jitter=0.0))
        assert at_inputs == pytest.approx(exact, abs=1e-8), approx
    # Moving Xu = x + delta towards x: VFE stays below the exact value (Titsias' bound) and
    # its gap shrinks (~delta²) to nothing.
    gaps = [exact - float(sparse_gp_log_marginal(x, y, **theta, inducing_points=x + delta,
                                                 approx="VFE", jitter=0.0))
            for delta in (0.1, 0.03, 0.01, 0.001)]
    assert all(g > 0 for g in gaps) and gaps == sorted(gaps, reverse=True), gaps
    assert gaps[0] > 0.1 and gaps[-1] < 1e-3, gaps


# --------------------------------------------------------------------------------------------
# The chain-rule distributions
# --------------------------------------------------------------------------------------------


def test_chain_rule_factors_sum_to_the_joint_and_low_rank_agrees():
    # N = 150 > 64: the low-rank density runs over several blocks of data.
    gen = torch.Generator().manual_seed(0)
    n, m = 150, 7
    w = torch.randn(3, n, m, generator=gen)
    d = torch.rand(3, n, generator=gen) + 0.1
    y = torch.randn(n, generator=gen)
    scale_tril = torch.linalg.cholesky(w @ w.transpose(-1, -2) + torch.diag_embed(d))
    dense = ChainRuleMultivariateNormal(scale_tril).log_prob(y)
    low_rank = ChainRuleLowRankMultivariateNormal(w, d).log_prob(y)
    joint = torch.distributions.MultivariateNormal(torch.zeros(n), scale_tril=scale_tril)
    joint = joint.log_prob(y)
    assert dense.shape == low_rank.shape == (3, n)
    torch.testing.assert_close(dense.sum(-1), joint, rtol=0, atol=1e-10)
    torch.testing.assert_close(low_rank, dense, rtol=0, atol=1e-10)


def test_chain_rule_samples_have_the_covariance():
    # 20000 draws of a 4-vector: each entry of the sample covariance has sd
    # sqrt((S_ij² + S_ii S_jj) / n); allow 5 sd.
    gen = torch.Generator().manual_seed(1)
    w, d = torch.randn(4, 2, generator=gen), torch.tensor([0.3, 0.5, 0.2, 1.0])
    cov = w @ w.T + torch.diag(d)
    n = 20000
    for distribution in (ChainRuleMultivariateNormal(torch.linalg.cholesky(cov)),
                         ChainRuleLowRankMultivariateNormal(w, d)):
        draws = distribution.sample((n,))
        assert draws.shape == (n, 4)
        sd = ((cov**2 + cov.diagonal()[:, None] * cov.diagonal()[None, :]) / n).sqrt()
        assert ((draws.T @ draws / n - cov).abs() < 5 * sd).all()


@pytest.mark.parametrize("name,n,options", [
    ("gp_regression", 40, {"kernel": "matern52"}),
    ("sparse_gp_regression", 40, {"approx": "DTC", "kernel": "matern52"}),
    ("sparse_gp_regression", 150, {"approx": "FITC", "num_inducing": 20}),
])
def test_every_option_vectorises(name, n, options, monkeypatch):
    # The registry tests run the defaults; the other options must broadcast too: log densities
    # of 5 prior draws in one pass under an outer plate = one at a time. N = 150 > 64 takes the
    # low-rank chain-rule density through three blocks of data.
    from zoo import tracing

    spec, data = zoo.get_model(name), {**gp_data(n=n), **options}
    draws = tracing.prior_draws(spec.fn, {k: v for k, v in data.items() if k != "y"}, 5)
    draws = {k: draws[k] for k in ("lengthscale", "amplitude", "sigma")}
    sites = ["y"]
    sequential = tracing.evaluate(spec.fn, draws, data, sites, log_prob=True, vectorize=False)
    monkeypatch.setattr(tracing, "_sequential", lambda *a, **k: pytest.fail("did not vectorise"))
    vectorised = tracing.evaluate(spec.fn, draws, data, sites, log_prob=True, vectorize=True)
    torch.testing.assert_close(vectorised, sequential, rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("noiseless", [True, False])
def test_gp_predict_is_the_textbook_posterior(noiseless):
    # Rasmussen & Williams eq. 2.25-2.26 with K_y = K + (sigma² + jitter) I:
    # mean = K*ᵀ K_y⁻¹ y, var = k** - K*ᵀ K_y⁻¹ K* (+ sigma² for y*).
    data = gp_data()
    x, y, x_new = data["x"].numpy(), data["y"].numpy(), np.linspace(-1.0, 11.0, 25)
    fit = point_fit("gp_regression", data, {k: [v] for k, v in THETA.items()})
    mean, var = gp_predict(fit, x_new, noiseless=noiseless)
    k_y = rbf_numpy(x, x, THETA["lengthscale"], THETA["amplitude"])
    k_y += (THETA["sigma"] ** 2 + JITTER) * np.eye(len(x))
    k_star = rbf_numpy(x, x_new, THETA["lengthscale"], THETA["amplitude"])
    want_var = THETA["amplitude"] ** 2 - np.einsum("ij,ij->j", k_star, np.linalg.solve(k_y, k_star))
    np.testing.assert_allclose(mean.numpy(), k_star.T @ np.linalg.solve(k_y, y), atol=1e-9)
    np.testing.assert_allclose(var.numpy(), want_var + (0 if noiseless else THETA["sigma"] ** 2),
                               atol=1e-9)


def test_gp_predict_averages_draws_by_the_law_of_total_variance():
    data = gp_data()
    draws = {"lengthscale": [0.7, 1.6], "amplitude": [1.2, 0.9], "sigma": [0.2, 0.35]}
    x_new = torch.linspace(0.0, 10.0, 11)
    mean, var = gp_predict(point_fit("gp_regression", data, draws), x_new)
    tensors = {k: torch.tensor(v) for k, v in draws.items()}
    means, variances = gp_conditional("gp_regression", data, tensors, x_new)
    for s in range(2):  # each draw's conditional is the one-draw prediction
        one = point_fit("gp_regression", data, {k: [v[s]] for k, v in draws.items()})
        m, v = gp_predict(one, x_new)
        torch.testing.assert_close((means[s], variances[s]), (m, v))
    torch.testing.assert_close(mean, means.mean(0))
    torch.testing.assert_close(var, variances.mean(0) + (means[0] - means[1]) ** 2 / 4)


@pytest.mark.parametrize("approx", APPROXIMATIONS)
def test_sparse_predict_matches_contrib_sparse_gp_regression(approx):
    data = gp_data()
    xu, x_new = torch.linspace(0.5, 9.5, 9), torch.linspace(-1.0, 11.0, 25)
    model = contrib_gp.models.SparseGPRegression(data["x"], data["y"], contrib_kernel(THETA), xu,
                                                 noise=torch.tensor(THETA["sigma"] ** 2),
                                                 approx=approx)
    with torch.no_grad():
        want = model(x_new, noiseless=False)
    fit = point_fit("sparse_gp_regression", {**data, "inducing_points": xu, "approx": approx},
                    {k: [v] for k, v in THETA.items()})
    got = gp_predict(fit, x_new, noiseless=False)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_gp_predict_after_a_fit_from_the_python_api():
    data = gp_data()
    fit = zoo.fit("sparse_gp_regression", data, method="laplace", seed=0, num_samples=50,
                  adam_steps=100)
    mean, var = gp_predict(fit, [0.0, 2.5, 5.0])
    assert mean.shape == var.shape == (3,) and (var > 0).all() and torch.isfinite(mean).all()
    with pytest.raises(ZooError, match="x_new must be 1-D"):
        gp_predict(fit, [[0.0, 1.0]])
    other = point_fit("normal_normal", zoo.load_dataset("normal_synthetic"), {"mu": [0.0]})
    with pytest.raises(ZooError, match="gp_predict needs a fit of gp_regression"):
        gp_predict(other, [0.0])


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,change,match", [
    ("gp_regression", {"kernel": "matern"}, r"kernel 'matern' \(did you mean 'matern52'"),
    ("sparse_gp_regression", {"approx": "FITC2"}, r"approximation 'FITC2' \(did you mean 'FITC'"),
    ("sparse_gp_regression", {"num_inducing": 0}, r"num_inducing=0 must be an integer >= 1"),
    ("sparse_gp_regression", {"inducing_points": [[0.0, 1.0]]}, r"inducing_points must be .*1-D"),
])
def test_bad_options_get_a_clear_error(name, change, match):
    with pytest.raises(ZooError, match=match):
        zoo.fit(name, {**gp_data(), **change}, method="laplace", adam_steps=10)


def test_dataset_arguments_are_checked():
    with pytest.raises(ZooError, match="n=1 must be an integer >= 2"):
        gp_data(n=1)
    with pytest.raises(ZooError, match="lengthscale=-1.0 must be > 0"):
        gp_data(lengthscale=-1.0)
    a, b = gp_data(seed=3), gp_data(seed=3)
    assert torch.equal(a["y"], b["y"]) and not torch.equal(a["y"], gp_data(seed=4)["y"])


# --------------------------------------------------------------------------------------------
# Inference (slow)
# --------------------------------------------------------------------------------------------


def grid_posterior_means(data: dict, size: int = 40) -> dict[str, float]:
    """Posterior means of the three hyperparameters by quadrature on a size³ grid in log space
    (prior × gp_log_marginal × the log-Jacobian); < 1e-4 of the mass lies on its faces."""
    bounds = {"lengthscale": (0.4, 3.5), "amplitude": (0.4, 6.0), "sigma": (0.12, 0.5)}
    axes = [torch.linspace(math.log(lo), math.log(hi), size) for lo, hi in bounds.values()]
    points = torch.stack([g.ravel() for g in torch.meshgrid(*axes, indexing="ij")], -1)
    log_post = []
    for chunk in points.split(4000):
        l, a, s = chunk.exp().unbind(-1)
        log_prior = (stats.invgamma(LENGTHSCALE_CONCENTRATION, scale=LENGTHSCALE_RATE).logpdf(l)
                     + stats.halfnorm(scale=2.0).logpdf(a) + stats.halfnorm(scale=1.0).logpdf(s))
        log_post.append(gp_log_marginal(data["x"], data["y"], l[:, None], a[:, None], s[:, None])
                        + torch.as_tensor(log_prior) + chunk.sum(-1))
    weight = torch.softmax(torch.cat(log_post), 0)
    edges = weight.reshape(size, size, size)
    assert all(float(edges.select(d, i).sum()) < 1e-4 for d in range(3) for i in (0, -1))
    return dict(zip(bounds, (weight[:, None] * points.exp()).sum(0).tolist()))


@pytest.mark.slow
def test_chees_recovers_the_lengthscale_and_matches_quadrature():
    # gp_synthetic: one draw of an RBF GP with lengthscale 1, amplitude 1, sigma 0.25, n = 40.
    data = gp_data()
    fit = zoo.fit("gp_regression", data, method="chees", seed=0, num_warmup=200,
                  num_samples=100, num_chains=32)
    assert fit.converged, fit.warnings
    table = fit.summary(round_to="none")
    # Recovery: the truth within 2.5 posterior sd of the posterior mean (a near-Gaussian
    # posterior's central 99%), and the posterior informative (sd < 20% of the truth): a kernel
    # off by √2 in the lengthscale (exp(-r²) for exp(-r²/2)) would miss by ~3 sd.
    mean, sd = table.loc["lengthscale", "mean"], table.loc["lengthscale", "sd"]
    assert abs(mean - 1.0) < 2.5 * sd and sd < 0.2, (mean, sd)
    assert abs(table.loc["sigma", "mean"] - 0.25) < 2.5 * table.loc["sigma", "sd"]
    # The sampler against the exact posterior: means within 4 MCSE (false alarm ~6e-5 each;
    # the grid's own error is far smaller: < 1e-4 of the mass on its faces, and a uniform
    # rule on a smooth density that vanishes there converges geometrically).
    with default_dtype(torch.float64):
        exact = grid_posterior_means(data)
    for site, value in exact.items():
        assert abs(table.loc[site, "mean"] - value) < 4 * table.loc[site, "mcse_mean"], site
