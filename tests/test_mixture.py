"""Mixture models: enumerated assignments summed out exactly, and inference that recovers them.

Ground truth for the densities is scipy: log p(y[n] | θ) = logsumexp_k (log w_k + log N(y[n] |
m_k, s_k)), and the priors term by term (the ordered locations carry the K! of the folded iid
prior). Statistical checks use fixed seeds and say their tolerance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model
from scipy import stats
from scipy.special import logsumexp

import zoo
from zoo import tracing
from zoo.data import prepare
from zoo.datasets import posteriordb_reference
from zoo.datasets.mixture import mixture_truth
from zoo.errors import ZooError
from zoo.fit import default_dtype
from zoo.logdensity import LogJoint

from conftest import posteriordb_dir

THREE = {"n": 150, "weights": (0.3, 0.5, 0.2), "locs": (-4.0, 0.0, 4.0),
         "scales": (0.7, 1.0, 0.5)}
# two parameter points for K = 3 data (one near the truth, one far from it)
POINTS = {"weights": [[0.3, 0.45, 0.25], [0.6, 0.3, 0.1]],
          "locs": [[-3.8, 0.2, 4.1], [-1.0, 0.5, 6.0]],
          "scales": [[0.8, 1.1, 0.4], [2.0, 0.3, 1.5]]}
POSTERIOR = "low_dim_gauss_mix-low_dim_gauss_mix"


pytestmark = pytest.mark.usefixtures("float64")


def mixture_data(**args) -> dict:
    return prepare(zoo.get_model("gaussian_mixture"), zoo.load_dataset("mixture_synthetic", **args))


def pointwise(y: np.ndarray, w: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """log sum_k w_k N(y_n | m_k, s_k) for draws (S, K) and data (N,): (S, N)."""
    comp = stats.norm.logpdf(y[None, :, None], m[:, None, :], s[:, None, :])
    return logsumexp(np.log(w)[:, None, :] + comp, axis=-1)


def log_prior(w: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """gaussian_mixture's priors (defaults) at draws (S, K): Dirichlet(1), K! prod N(m | 0, 5)
    on the ordered locations, LogNormal(0, 1) scales."""
    k = w.shape[-1]
    return (np.array([stats.dirichlet.logpdf(wi, np.ones(k)) for wi in w]) + math.lgamma(k + 1)
            + stats.norm.logpdf(m, 0, 5).sum(-1) + stats.lognorm.logpdf(s, 1.0).sum(-1))


def points() -> dict[str, torch.Tensor]:
    return {k: torch.tensor(v) for k, v in POINTS.items()}


def numpy_points() -> tuple[np.ndarray, ...]:
    return tuple(np.array(POINTS[k]) for k in ("weights", "locs", "scales"))


# --- the densities: exact, against scipy ---------------------------------------------------

def test_assignments_are_enumerated_not_latent():
    spec, data = zoo.get_model("gaussian_mixture"), mixture_data(**THREE)
    ref = tracing.structure(spec.fn, data)
    assert tracing.enumerated_sites(ref) == ["z"]
    assert tracing.latent_sites(ref) == ["weights", "locs", "scales"]
    # low_dim_gauss_mix marginalises in its likelihood: no discrete site at all
    pdb = zoo.get_model("low_dim_gauss_mix")
    ref = tracing.structure(pdb.fn, prepare(pdb, zoo.load_dataset(pdb.default_dataset)))
    assert tracing.enumerated_sites(ref) == [] and tracing.latent_sites(ref) == ["mu", "sigma", "theta"]


@pytest.mark.parametrize("vectorize", [True, False])
def test_pointwise_log_likelihood_is_the_mixture_density(vectorize):
    # The per-observation log-likelihood with z summed out, not log N(y | m_z, s_z) at a sampled z.
    spec, data = zoo.get_model("gaussian_mixture"), mixture_data(**THREE)
    got = tracing.evaluate(spec.fn, points(), data, sites=["y"], log_prob=True,
                           vectorize=vectorize)["y"]
    want = pointwise(data["y"].numpy(), *numpy_points())
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10, atol=1e-10)


def test_log_joint_sums_the_assignments_out():
    # log p(y, θ) = log prior + sum_n log sum_k w_k N(y_n | m_k, s_k), three ways: LogJoint at
    # constrained draws (vs scipy), its batched density (chees' and the evidence's), and Pyro's
    # own NUTS potential, which enumerates by itself (initialize_model).
    spec, data = zoo.get_model("gaussian_mixture"), mixture_data(**THREE)
    lj = LogJoint(spec, data)
    assert lj.latents == ["weights", "locs", "scales"] and lj.dim == 2 + 3 + 3
    w, m, s = numpy_points()
    want = log_prior(w, m, s) + pointwise(data["y"].numpy(), w, m, s).sum(-1)
    np.testing.assert_allclose(lj.constrained(points()).numpy(), want, rtol=1e-10)

    u = lj.to_unconstrained(points())
    batched, how = lj.batched(2)
    assert how == "plate"  # enumerated sites are summed out under an outer plate
    _, potential_fn, _, _ = initialize_model(spec.fn, model_kwargs=data, max_plate_nesting=1)
    pyro_value = [-float(potential_fn(lj.flat.unflatten(ui))) for ui in u]
    np.testing.assert_allclose(batched(u).detach().numpy(), pyro_value, rtol=1e-10)
    np.testing.assert_allclose(lj.unconstrained(u).numpy(), pyro_value, rtol=1e-10)


def test_ordered_normal_is_the_folded_iid_prior():
    # Density K! prod N(x_k | loc, scale) on sorted vectors (K! times the iid density: the
    # K! orderings fold onto one), and draws are sorted iid draws: the smallest of 3 iid
    # N(0.5, 2) has mean 0.5 - 2 * 3 / (2 sqrt(pi)); 4000 draws, within 4 standard errors.
    from zoo.models.mixture import OrderedNormal

    d = OrderedNormal(0.5, 2.0, 3)
    x = d.sample((4000,))
    assert x.shape == (4000, 3) and (x[:, 1:] > x[:, :-1]).all()
    iid = stats.norm.logpdf(x.numpy(), 0.5, 2.0).sum(-1) + math.log(6)
    np.testing.assert_allclose(d.log_prob(x).numpy(), iid, rtol=1e-12)
    smallest = x[:, 0].numpy()
    expected = 0.5 - 2.0 * 3 / (2 * math.sqrt(math.pi))
    assert abs(smallest.mean() - expected) < 4 * smallest.std() / math.sqrt(smallest.size)
    assert d.expand((2, 5)).log_prob(x[:5]).shape == (2, 5)


@pytest.fixture(scope="module")
def two_components() -> tuple[dict, dict]:
    args = {"n": 200}  # the default data's K = 2 (weights 0.4/0.6, locs -2/2), more points
    return zoo.load_dataset("mixture_synthetic", **args), mixture_truth("mixture_synthetic", **args)


@pytest.fixture(scope="module")
def laplace_fit(two_components):
    with default_dtype(torch.float64):
        return zoo.fit("gaussian_mixture", two_components[0], method="laplace", seed=0,
                       num_samples=200, adam_steps=300)


@pytest.fixture(scope="module")
def svi_fit(two_components):
    # TraceEnum_ELBO; a full-rank Gaussian guide over the continuous sites (z hidden from it)
    with default_dtype(torch.float64):
        return zoo.fit("gaussian_mixture", two_components[0], method="svi", guide="mvn", seed=0,
                       num_steps=1500, lr=0.03, num_samples=1000)


def test_fit_log_likelihood_and_posterior_predictive_are_the_mixtures(laplace_fit, two_components):
    # ArviZ's log_likelihood group must be the marginal mixture density at every draw, and the
    # posterior predictive must draw z afresh: the PIT of y_rep under each draw's mixture CDF is
    # then Uniform(0, 1). KS test on 200 x 200 PIT values at the 0.001 level (fixed seed): a
    # predictive stuck in one component, or one z reused for every draw, fails it by far.
    fit, data = laplace_fit, two_components[0]
    assert set(fit.posterior) == {"weights", "locs", "scales"}
    idata = fit.to_inference_data()
    w, m, s = (idata.posterior[k].values[0] for k in ("weights", "locs", "scales"))
    want = pointwise(np.asarray(data["y"]), w, m, s)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], want, rtol=1e-10)
    y_rep = idata.posterior_predictive["y"].values[0]  # (draw, N)
    pit = (w[:, None, :] * stats.norm.cdf(y_rep[..., None], m[:, None, :], s[:, None, :])).sum(-1)
    assert stats.kstest(pit.ravel(), "uniform").pvalue > 1e-3
    assert "z" not in idata.prior


def test_meanfield_elbo_cannot_sum_out_assignments():
    with pytest.raises(ZooError, match="enumerated sites z.*elbo = 'trace'"):
        zoo.fit("gaussian_mixture", zoo.load_dataset("mixture_synthetic"), method="svi",
                elbo="meanfield", num_steps=10)


# --- inference recovers the truth ----------------------------------------------------------

def assert_near_truth(fit, truth: dict, slack: float = 0.0) -> None:
    """Posterior mean within 4 posterior sds of the value that generated the data (a correct
    posterior puts it there with probability ~1 - 6e-5 per coordinate), plus ``slack`` posterior
    sds for the method's own error (optimiser noise, a Gaussian approximation)."""
    for site in ("weights", "locs", "scales"):
        draws = fit.posterior[site].reshape(-1, len(truth[site]))
        mean, sd = draws.mean(0), draws.std(0)
        assert (np.abs(mean - truth[site]) < (4 + slack) * sd).all(), (site, mean, sd, truth[site])


def test_svi_recovers_the_truth(svi_fit, laplace_fit, two_components):
    assert svi_fit.info["elbo_path"] == "jit" and svi_fit.converged, svi_fit.warnings
    assert_near_truth(svi_fit, two_components[1], slack=0.5)
    assert_near_truth(laplace_fit, two_components[1], slack=0.5)


def test_evidence_of_an_enumerated_model(svi_fit, laplace_fit):
    # Two unbiased estimates of log Z by importance sampling, from different proposals (the
    # Laplace Gaussian, in unconstrained coordinates; the SVI guide's draws, through
    # LogJoint.constrained): within 4 combined MCSE. Both weigh by zoo's log joint with z summed
    # out, which test_log_joint_sums_the_assignments_out checks exactly against scipy. The
    # Laplace estimate itself is off by O(1/N): within 0.2 nats here.
    by_laplace = laplace_fit.log_evidence("importance", num_draws=10_000)
    by_svi = svi_fit.log_evidence("importance", num_draws=10_000)
    for est in (by_laplace, by_svi):
        assert est.diagnostics["pareto_k"] < 0.7, est
    assert abs(by_laplace.value - by_svi.value) < 4 * math.hypot(by_laplace.mcse, by_svi.mcse)
    assert abs(laplace_fit.log_evidence("laplace").value - by_laplace.value) < 0.2


# --- slow: NUTS, and posteriordb's reference posterior --------------------------------------

@pytest.mark.slow
def test_nuts_and_chees_recover_the_truth(two_components):
    # Pyro's NUTS potential enumerates z itself (initialize_model); chees runs on zoo's batched
    # log density with z contracted out. Each recovers the truth (4 posterior sds), and their
    # means agree within 4 combined MCSE (false-alarm rate ~6e-5 per parameter).
    data, truth = two_components
    nuts = zoo.fit("gaussian_mixture", data, method="nuts", seed=0, num_warmup=150,
                   num_samples=250, num_chains=2, jit=True)
    chees = zoo.fit("gaussian_mixture", data, method="chees", seed=0, num_warmup=150,
                    num_samples=100, num_chains=32, init_strategy="median")
    for fit in (nuts, chees):
        assert fit.info["num_divergences"] == 0
        assert_near_truth(fit, truth)
    a, b = nuts.summary(round_to="none"), chees.summary(round_to="none")
    z = (a["mean"] - b["mean"]) / np.hypot(a["mcse_mean"], b["mcse_mean"])
    assert (z.abs() < 4).all(), z


@pytest.mark.slow
@pytest.mark.parametrize("method,settings", [
    # the zoo's default sampler (NUTS on the enumerated mixture is checked above); many short
    # chains from the prior-median start: from uniform starts some superchains sit in a local
    # mode (one broad component) through a short warmup on N = 1000
    ("chees", {"num_warmup": 150, "num_samples": 150, "num_chains": 16, "init_strategy": "median"}),
])
def test_low_dim_gauss_mix_matches_posteriordb(method, settings):
    # As tests/test_posteriordb.py: means within 4 combined MCSE (ours + the reference's),
    # false-alarm rate ~6e-5 per parameter; sds within 10% (posteriordb's criterion), > 4 of the
    # sd's relative Monte Carlo error 1/sqrt(2 ESS) at our ~1000+ effective draws.
    root = posteriordb_dir(POSTERIOR).parent
    data = zoo.load_dataset("posteriordb", posterior=POSTERIOR, root=str(root))
    fit = zoo.fit("low_dim_gauss_mix", data, method=method, seed=0, **settings)
    table = zoo.diagnostics.compare_reference(fit, posteriordb_reference(POSTERIOR, root=str(root)))
    assert set(table["param"]) == {"mu[0]", "mu[1]", "sigma[0]", "sigma[1]", "theta"}
    assert (table["z"].abs() < 4).all(), table
    assert (np.abs(table["sd_ratio"] - 1) < 0.10).all(), table
    assert fit.converged, fit.checks()
