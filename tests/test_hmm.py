"""Hidden Markov models: the forward algorithm against brute-force enumeration of the hidden
paths, the three posteriordb ports against hand transcriptions of their Stan programs, and
(slow) their default fits against posteriordb's reference draws."""

from __future__ import annotations

import functools
import itertools
import math
import pickle

import numpy as np
import pyro.poutine as poutine
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import zoo
from zoo import tracing
from zoo.data import prepare
from zoo.datasets import posteriordb_reference
from zoo.errors import ZooError
from zoo.models.hmm import (HiddenMarkovSeries, hmm_log_backward, hmm_log_likelihood,
                            hmm_log_prefix_likelihoods, log_matrix_product, log_prefix_products)

from conftest import SMOKE, default_data, posteriordb_dir

pytestmark = pytest.mark.usefixtures("float64")

MODELS = ["hmm_example", "hmm_drive_0", "hmm_drive_1"]


# --------------------------------------------------------------------------------------------
# Brute force: every one of the K^T hidden paths
# --------------------------------------------------------------------------------------------


def random_hmm(batch: tuple, num_states: int, num_steps: int, seed: int = 0):
    """Random log_init (batch, K), log_trans (batch, K, K) and log_emit (batch, T, K), as
    numpy and torch; emission log densities spread over several units, as real ones are."""
    rng = np.random.default_rng(seed)
    log_init = np.log(rng.dirichlet(np.ones(num_states), size=batch))
    log_trans = np.log(rng.dirichlet(np.ones(num_states), size=batch + (num_states,)))
    log_emit = rng.normal(-2.0, 3.0, size=batch + (num_steps, num_states))
    return log_init, log_trans, log_emit


def brute_force(log_init, log_trans, log_emit, steps=None, extra=None):
    """log sum over all paths z of [init(z1)] prod trans(z[t-1], z[t]) prod_{t in steps}
    emit[t, z[t]] (+ extra[t, z[t]] for every t), per batch element: the definition, summed
    path by path. ``log_init=None`` is Stan's flat start."""
    num_steps, num_states = log_emit.shape[-2:]
    steps = range(num_steps) if steps is None else steps
    batch = np.broadcast_shapes(log_emit.shape[:-2], log_trans.shape[:-2],
                                () if log_init is None else log_init.shape[:-1])
    terms = []
    for path in itertools.product(range(num_states), repeat=num_steps):
        total = np.zeros(batch) + (0.0 if log_init is None else log_init[..., path[0]])
        for t in range(1, num_steps):
            total += log_trans[..., path[t - 1], path[t]]
        for t in steps:
            total += log_emit[..., t, path[t]]
        if extra is not None:
            total += sum(extra[..., t, path[t]] for t in range(num_steps))
        terms.append(total)
    return logsumexp(np.stack(terms), axis=0)


@pytest.mark.parametrize("num_steps", [1, 2, 5, 6])
@pytest.mark.parametrize("flat_start", [False, True])
def test_forward_algorithm_matches_enumeration(num_steps, flat_start):
    # K = 3, batched parameters (2 x 3 "chains"); odd and even T exercise the tree's carry.
    log_init, log_trans, log_emit = random_hmm((2, 3), 3, num_steps)
    init = None if flat_start else log_init
    exact = brute_force(init, log_trans, log_emit)
    t = torch.as_tensor
    got = hmm_log_likelihood(None if flat_start else t(log_init), t(log_trans), t(log_emit))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got.numpy(), exact, rtol=0, atol=1e-10)
    prefix = hmm_log_prefix_likelihoods(None if flat_start else t(log_init), t(log_trans),
                                        t(log_emit))
    for s in range(num_steps):  # log p(y[1..s+1]): paths over s+1 steps
        np.testing.assert_allclose(prefix[..., s].numpy(),
                                   brute_force(init, log_trans, log_emit[..., :s + 1, :]),
                                   rtol=0, atol=1e-10)


def test_forward_algorithm_broadcasts_shared_parameters():
    # One transition matrix for every chain, emissions per chain: leading dims broadcast.
    log_init, log_trans, log_emit = random_hmm((4,), 3, 6, seed=1)
    t = torch.as_tensor
    got = hmm_log_likelihood(t(log_init[0]), t(log_trans[0]), t(log_emit))
    exact = brute_force(log_init[0], log_trans[0], log_emit)
    np.testing.assert_allclose(got.numpy(), exact, rtol=0, atol=1e-10)


@pytest.mark.parametrize("num_steps", [1, 3, 7, 8, 13])
def test_tree_and_scan_match_the_left_to_right_product(num_steps):
    mats = torch.randn(2, num_steps, 3, 3, dtype=torch.float64) * 2
    prefix, suffix = mats[:, 0], mats[:, -1]
    prefixes, suffixes = [prefix], [suffix]
    for s in range(1, num_steps):  # the sequential products the parallel forms replace
        prefix = torch.logsumexp(prefix.unsqueeze(-1) + mats[:, s].unsqueeze(-3), -2)
        earlier = mats[:, num_steps - 1 - s]
        suffix = torch.logsumexp(earlier.unsqueeze(-1) + suffix.unsqueeze(-3), -2)
        prefixes.append(prefix), suffixes.append(suffix)
    torch.testing.assert_close(log_matrix_product(mats), prefix, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_prefix_products(mats), torch.stack(prefixes, 1),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(log_prefix_products(mats, reverse=True),
                               torch.stack(suffixes[::-1], 1), rtol=0, atol=1e-12)


def test_backward_messages_match_enumeration():
    log_init, log_trans, log_emit = random_hmm((2,), 3, 5, seed=2)
    beta = hmm_log_backward(torch.as_tensor(log_trans), torch.as_tensor(log_emit)).numpy()
    for s in range(5):
        for k in range(3):  # log p(y[s+1..T] | z[s] = k): pin z[s] by an initial point mass
            pinned = np.full((2, 3), -np.inf)
            pinned[:, k] = 0.0
            exact = brute_force(pinned, log_trans, log_emit[:, s:], steps=range(1, 5 - s))
            np.testing.assert_allclose(beta[:, s, k], exact, rtol=0, atol=1e-10)


# --------------------------------------------------------------------------------------------
# HiddenMarkovSeries: the observed site
# --------------------------------------------------------------------------------------------


def series_args(seed: int = 3, batch: tuple = (2,), num_steps: int = 6):
    """A 3-state series with Normal emissions; parameters carry a singleton time dim, as under
    a plate of draws."""
    rng = np.random.default_rng(seed)
    log_trans = torch.as_tensor(np.log(rng.dirichlet(np.ones(3), size=batch + (1, 3))))
    locs = torch.as_tensor(rng.normal(0, 2, size=batch + (1, 3)))
    y = torch.as_tensor(rng.normal(0, 2, size=batch + (num_steps,)))
    return log_trans, locs, y


def test_series_log_prob_is_the_chain_rule_of_the_forward_algorithm():
    log_trans, locs, y = series_args()
    series = HiddenMarkovSeries(log_trans, torch.distributions.Normal(locs, 1.0), 6)
    assert series.batch_shape == (2, 6)
    terms = series.log_prob(y)
    log_emit = torch.distributions.Normal(locs, 1.0).log_prob(y.unsqueeze(-1))  # (2, 6, 3)
    uniform = torch.full((3,), -math.log(3), dtype=torch.float64)
    exact = brute_force(uniform.numpy(), log_trans[:, 0].numpy(), log_emit.numpy())
    np.testing.assert_allclose(terms.sum(-1).numpy(), exact, rtol=0, atol=1e-10)
    for s in range(1, 7):  # each term is log p(y[s] | y[1..s-1])
        np.testing.assert_allclose(
            terms[:, :s].sum(-1).numpy(),
            brute_force(uniform.numpy(), log_trans[:, 0].numpy(), log_emit[:, :s].numpy()),
            rtol=0, atol=1e-10)


@pytest.mark.parametrize("num_steps", [1, 6])
def test_series_given_another_is_the_conditional(num_steps):
    # v given u from the same path: terms log p(v[s] | v[1..s-1], u[1..T]), summing to
    # log p(u, v) - log p(u).
    log_trans, locs, u = series_args(seed=4, num_steps=num_steps)
    _, v_locs, v = series_args(seed=5, num_steps=num_steps)
    emit_u = torch.distributions.Normal(locs, 1.0)
    given = emit_u.log_prob(u.unsqueeze(-1))
    log_emit_v = torch.distributions.Normal(v_locs, 0.5).log_prob(v.unsqueeze(-1))
    series = HiddenMarkovSeries(log_trans, torch.distributions.Normal(v_locs, 0.5), num_steps,
                                given_log_emit=given)
    terms = series.log_prob(v).numpy()
    init, trans = np.full(3, -math.log(3)), log_trans[:, 0].numpy()
    log_u = brute_force(init, trans, given.numpy())
    for s in range(1, num_steps + 1):  # log p(u[1..T], v[1..s]) - log p(u)
        joint = brute_force(init, trans, log_emit_v.numpy(), steps=range(s), extra=given.numpy())
        np.testing.assert_allclose(terms[:, :s].sum(-1), joint - log_u, rtol=0, atol=1e-10)


def test_series_simulates_the_chain():
    # Well-separated emissions reveal the path: over T = 2 the path (z1, z2) has probability
    # 1/K * theta[z1, z2]. 20,000 draws; each frequency within 4 binomial sds.
    theta = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
    series = HiddenMarkovSeries(theta.log(), torch.distributions.Normal(torch.tensor([0.0, 10.0]),
                                                                       0.01), 2)
    draws = series.sample((20_000,))
    assert draws.shape == (20_000, 2)
    states = (draws > 5).long()
    for z1, z2 in itertools.product(range(2), repeat=2):
        p = 0.5 * float(theta[z1, z2])
        freq = float(((states[:, 0] == z1) & (states[:, 1] == z2)).double().mean())
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / 20_000), (z1, z2)


def test_series_given_another_simulates_from_its_path():
    # u pins the hidden path (its density under the wrong state is e^-50 smaller), so v must
    # be emitted from that path, whatever the transitions would prefer.
    theta = torch.tensor([[0.99, 0.01], [0.01, 0.99]])
    path = torch.tensor([0, 1, 1, 0, 1, 0])
    given = torch.where(torch.nn.functional.one_hot(path, 2).bool(), 0.0, -50.0)
    series = HiddenMarkovSeries(theta.log(), torch.distributions.Normal(torch.tensor([0.0, 10.0]),
                                                                       0.01), 6,
                                given_log_emit=given)
    draws = series.sample((200,))
    assert torch.equal((draws > 5).long(), path.expand(200, 6))


# --------------------------------------------------------------------------------------------
# The models against their Stan programs, transcribed by hand
# --------------------------------------------------------------------------------------------


def stan_forward(log_emit: np.ndarray, theta: np.ndarray) -> float:
    """The Stan programs' forward loop, as written there (gamma[1, k] = emission, no start)."""
    num_steps, num_states = log_emit.shape
    gamma = np.empty((num_steps, num_states))
    gamma[0] = log_emit[0]
    for t in range(1, num_steps):
        for k in range(num_states):
            acc = [gamma[t - 1, j] + np.log(theta[j, k]) + log_emit[t, k]
                   for j in range(num_states)]
            gamma[t, k] = logsumexp(acc)
    return float(logsumexp(gamma[-1]))


def stan_log_density(name: str, data: dict, p: dict) -> float:
    """Stan's target (constrained parameters, all constants kept) for each program."""
    theta = np.stack([p["theta1"], p["theta2"]])
    if name == "hmm_example":
        mu, y = p["mu"], data["y"].numpy()
        prior = stats.norm.logpdf(mu[0], 3, 1) + stats.norm.logpdf(mu[1], 10, 1)
        log_emit = stats.norm.logpdf(y[:, None], mu[None, :], 1)
        return prior + stan_forward(log_emit, theta)
    alpha, u, v = data["alpha"].numpy(), data["u"].numpy(), data["v"].numpy()
    phi, lam = p["phi"], p["lambda"]
    prior = (stats.dirichlet.logpdf(p["theta1"], alpha[0])
             + stats.dirichlet.logpdf(p["theta2"], alpha[1])
             + stats.norm.logpdf(phi[0], 0, 1) + stats.norm.logpdf(phi[1], 3, 1)
             + stats.norm.logpdf(lam[0], 0, 1) + stats.norm.logpdf(lam[1], 3, 1))
    if name == "hmm_drive_0":  # exponential_lpdf(u | phi) = log phi - phi u
        log_emit = (np.log(phi) - phi * u[:, None]) + (np.log(lam) - lam * v[:, None])
    else:
        log_emit = (stats.norm.logpdf(u[:, None], phi, data["tau"])
                    + stats.norm.logpdf(v[:, None], lam, data["rho"]))
    return prior + stan_forward(log_emit, theta)


POINTS = {  # two points per model: near the posterior, and well away from it
    "hmm_example": [{"theta1": [0.7, 0.3], "theta2": [0.1, 0.9], "mu": [3.0, 8.8]},
                    {"theta1": [0.4, 0.6], "theta2": [0.55, 0.45], "mu": [1.5, 6.0]}],
    "hmm_drive_0": [{"theta1": [0.99, 0.01], "theta2": [0.04, 0.96], "phi": [1.8, 6.7],
                     "lambda": [0.028, 0.076]},
                    {"theta1": [0.6, 0.4], "theta2": [0.3, 0.7], "phi": [0.5, 2.0],
                     "lambda": [0.1, 0.5]}],
    "hmm_drive_1": [{"theta1": [0.97, 0.03], "theta2": [0.01, 0.99], "phi": [-2.34, -0.74],
                     "lambda": [2.43, 3.54]},
                    {"theta1": [0.6, 0.4], "theta2": [0.3, 0.7], "phi": [-2.0, -1.0],
                     "lambda": [2.0, 3.0]}],
}


@pytest.mark.parametrize("name", MODELS)
def test_log_joint_is_the_stan_program(name):
    # The model's log joint is Stan's target plus one constant, log(1/K) = -log 2 (the uniform
    # start where Stan's forward loop has none); the Dirichlet and Normal terms keep their
    # constants in both. So at both points the difference is -log 2, to rounding.
    spec = zoo.get_model(name)
    data = prepare(spec, default_data(name))
    for point in POINTS[name]:
        values = {k: torch.tensor(v) for k, v in point.items()}
        trace = poutine.trace(poutine.condition(spec.fn, values)).get_trace(**data)
        got = float(trace.log_prob_sum())
        expected = stan_log_density(name, data, {k: np.array(v) for k, v in point.items()})
        assert got - expected == pytest.approx(-math.log(2), abs=1e-9)


@pytest.mark.parametrize("name", MODELS)
def test_sites_match_the_posteriordb_reference(name):
    spec = zoo.get_model(name)
    posteriordb_dir(spec.posteriordb[0])
    data = prepare(spec, default_data(name))
    trace = tracing.structure(spec.fn, data)
    latents = tracing.latent_sites(trace)
    reference = posteriordb_reference(spec.posteriordb[0])
    assert set(reference) == set(latents)
    for site, draws in reference.items():
        assert draws.shape[2:] == trace.nodes[site]["value"].shape, site
    assert list(tracing.observed_keys(spec.fn, data).values()) == list(spec.observed)
    assert set(spec.arguments) >= set(data)  # every posteriordb data key is a model argument


@pytest.mark.parametrize("name", MODELS)
def test_models_vectorise_over_draws(name, monkeypatch):
    # Ten reference draws: log-likelihoods under the outer plate of draws equal the one-draw
    # runs, and posterior predictive series come out one per draw.
    spec = zoo.get_model(name)
    posteriordb_dir(spec.posteriordb[0])
    data = prepare(spec, default_data(name))
    reference = posteriordb_reference(spec.posteriordb[0])
    draws = {k: torch.as_tensor(v[:, 0]) for k, v in reference.items()}  # one per chain
    sites = list(spec.observed)
    sequential = tracing.evaluate(spec.fn, draws, data, sites, log_prob=True, vectorize=False)

    def no_fallback(*args, **kwargs):
        raise AssertionError(f"{name} did not vectorise under an outer plate")

    monkeypatch.setattr(tracing, "_sequential", no_fallback)
    vectorised = tracing.evaluate(spec.fn, draws, data, sites, log_prob=True)
    for site in sites:
        assert vectorised[site].shape == (10, data["N"])
        torch.testing.assert_close(vectorised[site], sequential[site], rtol=1e-10, atol=1e-10)
    covariates = {k: v for k, v in data.items() if k not in spec.observed}
    predictive = tracing.evaluate(spec.fn, draws, covariates, sites)
    for site in sites:
        assert predictive[site].shape == (10, data["N"])
        assert torch.isfinite(predictive[site]).all()


def test_drive_models_pickle_and_bind_their_emissions():
    for name, family in (("hmm_drive_0", "Exponential"), ("hmm_drive_1", "Normal")):
        spec = zoo.get_model(name)
        assert spec.family == "hmm" and "emission" not in spec.arguments
        clone = pickle.loads(pickle.dumps(spec.fn))  # chains may run in subprocesses
        assert isinstance(clone, functools.partial)
        assert family.lower() in spec.summary_line
        assert f"{family}(" in spec.description


def test_bad_arguments_get_clear_errors():
    alpha = torch.tensor([[4.0, 2.0], [2.0, 4.0]])
    with pytest.raises(ZooError, match="K = 2"):
        zoo.get_model("hmm_example").fn(K=3, N=10)
    with pytest.raises(ZooError, match="'N'"):
        zoo.get_model("hmm_example").fn()
    with pytest.raises(ZooError, match="'tau' and 'rho'"):
        zoo.get_model("hmm_drive_1").fn(N=5, alpha=alpha)
    with pytest.raises(ZooError, match="have none"):
        zoo.get_model("hmm_drive_0").fn(N=5, alpha=alpha, tau=0.1, rho=0.1)
    with pytest.raises(ZooError, match="'alpha'"):
        zoo.get_model("hmm_drive_0").fn(N=5)


def test_chees_smoke_fit_has_pointwise_log_likelihood():
    # Smoke settings: exercises the many-chain sampler (vmap, jit) and the pointwise terms.
    name = "hmm_example"
    fit = zoo.fit(name, default_data(name), method="chees", seed=0, **SMOKE["chees"])
    assert fit.method == "chees"
    log_lik = fit.log_likelihood()["y"]
    assert log_lik.shape == (SMOKE["chees"]["num_chains"], SMOKE["chees"]["num_samples"], 100)
    assert np.isfinite(log_lik).all()
    assert fit.posterior_predictive()["y"].shape == log_lik.shape


# --------------------------------------------------------------------------------------------
# Default fits against posteriordb's reference posteriors
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_default_fit_matches_posteriordb(name):
    # Each mean within 4 combined MCSE (ours and the reference's 10,000 draws): a false alarm
    # has probability ~6e-5 per parameter if both chains are right. The sds within 10%: with
    # ESS >= 1000 (chees' default target) an sd's own Monte Carlo error is ~sd / sqrt(2 ESS) <
    # 2.3%, so 10% leaves room for ESS estimates on heavy tails without hiding a wrong scale.
    spec = zoo.get_model(name)
    reference = posteriordb_reference(spec.posteriordb[0])
    posteriordb_dir(spec.posteriordb[0])
    fit = zoo.fit(name, default_data(name), method="mcmc", seed=0)
    table = zoo.diagnostics.compare_reference(fit, reference)
    expected = {f"{site}[{i}]" for site, draws in reference.items()
                for i in range(draws.shape[-1])}
    assert set(table["param"]) == expected, table
    assert (table["z"].abs() < 4).all(), table
    assert ((table["sd_ratio"] - 1).abs() < 0.1).all(), table
    assert fit.converged, fit.warnings
