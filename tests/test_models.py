"""Registry-wide model tests and independent checks of every closed form.

Closed forms are checked against the models themselves: numerical quadrature of the model's own
log joint (from a Pyro trace) for the 1-D cases, and Bayes' rule
log p(y) = log p(y, theta) - log p(theta | y) at two different theta for the NIG regressions.
"""

from __future__ import annotations

import inspect
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pyro.poutine as poutine
import pytest
import torch
from scipy import integrate, stats

from zoo import tracing
from zoo.data import prepare
from zoo.errors import ZooError
from zoo.models import nig_posterior, polynomial_features
from zoo.models.conjugate import nig_log_joint_posterior
from conftest import default_data as conftest_default_data
from zoo.registry import METHODS, get_model, list_datasets, list_models, load_dataset

EXPECTED = {
    "beta_binomial": "conjugate",
    "normal_normal": "conjugate",
    "linear_regression": "regression",
    "logistic_regression": "regression",
    "eight_schools_centered": "hierarchical",
    "eight_schools_noncentered": "hierarchical",
    **{f"polynomial_d{k}": "polynomial" for k in range(6)},
}
EXACT = [n for n in list_models() if get_model(n).exact_log_evidence is not None]
REGRESSIONS = ["linear_regression", "logistic_regression", "polynomial_d2"]
POSTERIORDB = Path(
    os.environ.get("ZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
) / "posteriordb"
EIGHT_SCHOOLS_REF = "eight_schools-eight_schools_noncentered"


pytestmark = pytest.mark.usefixtures("float64")


def default_data(name: str, **overrides) -> tuple:
    spec = get_model(name)
    data = prepare(spec, {**conftest_default_data(name), **overrides})
    return spec, data


def covariates(spec, data: dict) -> dict:
    return {k: v for k, v in data.items() if k not in spec.observed}


def log_joint(spec, data: dict, **values) -> float:
    """log p(y, theta) from the model's own trace, conditioned on ``values``."""
    trace = poutine.trace(poutine.condition(spec.fn, values)).get_trace(**data)
    return float(trace.log_prob_sum())


def site_shapes(spec, data: dict) -> dict[str, tuple]:
    trace = tracing.structure(spec.fn, data)
    return {n: tuple(s["value"].shape) for n, s in trace.nodes.items() if s["type"] == "sample"}


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


def test_catalogue_names_and_families():
    assert set(EXPECTED) <= set(list_models())
    for name, family in EXPECTED.items():
        assert get_model(name).family == family, name


@pytest.mark.parametrize("name", list_models())
def test_spec_metadata(name):
    spec = get_model(name)
    assert spec.summary_line and not spec.summary_line.endswith(":"), "one-line summary first"
    assert "~" in spec.description, "the description states the model's math"
    assert spec.methods and set(spec.methods) <= set(METHODS)
    assert spec.references
    assert spec.default_dataset in list_datasets()
    assert set(spec.observed) <= set(spec.arguments)
    assert set(spec.data_shapes) <= set(spec.arguments)


@pytest.mark.parametrize("name", EXACT)
def test_exact_forms_take_the_model_arguments(name):
    # Same names and defaults: exact_*(**data) must see the hyperparameters the model sees.
    spec = get_model(name)
    model = [(p.name, p.default) for p in inspect.signature(spec.fn).parameters.values()]
    for exact in (spec.exact_posterior, spec.exact_log_evidence):
        assert [(p.name, p.default) for p in inspect.signature(exact).parameters.values()] == model


@pytest.mark.parametrize("name", list_models())
def test_data_shapes_agree_with_default_dataset(name):
    spec, data = default_data(name)
    assert set(spec.data_shapes) <= set(data)
    assert set(spec.observed) <= set(data)
    trace = tracing.structure(spec.fn, data)
    for key in spec.observed:  # the observed site is conditioned on exactly the data
        assert trace.nodes[key]["is_observed"]
        assert torch.equal(trace.nodes[key]["value"], data[key])


def skip_if_improper(spec, data: dict) -> None:
    improper = tracing.improper_sites(tracing.structure(spec.fn, data))
    if improper:
        pytest.skip(f"{spec.name}: flat (improper) prior on {improper}: no prior to draw from")


def parameter_draws(spec, data: dict, num: int) -> dict:
    """``num`` prior draws of the latent sites; for an improper prior, points spread around a
    feasible one in unconstrained space (the vectorised evaluation needs values, not a prior)."""
    ref = tracing.structure(spec.fn, data)
    if not tracing.improper_sites(ref):
        draws = tracing.prior_draws(spec.fn, covariates(spec, data), num, vectorize=False)
        return {k: draws[k] for k in tracing.latent_sites(ref)}
    generator = torch.Generator().manual_seed(0)
    out = {}
    for site in tracing.latent_sites(ref):
        t = torch.distributions.transform_to(ref.nodes[site]["fn"].support)
        u = t.inv(ref.nodes[site]["value"])
        out[site] = t(u + 0.5 * torch.randn((num, *u.shape), generator=generator, dtype=u.dtype))
    return out


@pytest.mark.parametrize("name", list_models())
def test_prior_predictive_runs(name):
    spec, data = default_data(name)
    skip_if_improper(spec, data)
    trace = tracing.get_trace(spec.fn, covariates(spec, data))
    trace.compute_log_prob()
    for key in spec.observed:
        site = trace.nodes[key]
        assert not site["is_observed"], "without the observed key the model must simulate it"
        assert site["value"].shape == data[key].shape
    for site in trace.nodes.values():
        if site["type"] == "sample":
            assert torch.isfinite(site["log_prob"]).all(), site["name"]


@pytest.mark.parametrize("name", list_models())
def test_vectorised_evaluation_matches_sequential(name, monkeypatch):
    spec, data = default_data(name)
    ref = tracing.structure(spec.fn, data)
    latents = tracing.latent_sites(ref)
    draws = parameter_draws(spec, data, 5)
    sites = latents + tracing.deterministic_sites(ref) + tracing.observed_sites(ref)
    sequential = tracing.evaluate(spec.fn, draws, data, sites, log_prob=True, vectorize=False)

    # evaluate() silently falls back to the loop when vectorising fails: forbid that here.
    def no_fallback(*args, **kwargs):
        raise AssertionError(f"{name} did not vectorise under an outer plate")

    monkeypatch.setattr(tracing, "_sequential", no_fallback)
    vectorised = tracing.evaluate(spec.fn, draws, data, sites, log_prob=True, vectorize=True)
    for site in sites:
        torch.testing.assert_close(vectorised[site], sequential[site], rtol=1e-10, atol=1e-10)
    deterministic = tracing.evaluate(spec.fn, draws, data, tracing.deterministic_sites(ref))
    for site, value in deterministic.items():
        assert value.shape == (5,) + ref.nodes[site]["value"].shape
    predictive = tracing.evaluate(spec.fn, draws, covariates(spec, data), list(spec.observed))
    for key in spec.observed:
        assert predictive[key].shape == (5,) + data[key].shape


@pytest.mark.parametrize("name", list_models())
def test_prior_draws_vectorise(name, monkeypatch):
    spec, data = default_data(name)
    skip_if_improper(spec, data)
    calls = []
    get_trace = tracing.get_trace
    monkeypatch.setattr(tracing, "get_trace", lambda *a, **k: calls.append(1) or get_trace(*a, **k))
    draws = tracing.prior_draws(spec.fn, covariates(spec, data), 7)
    assert len(calls) == 2, "one reference trace and one vectorised trace, no per-draw loop"
    shapes = site_shapes(spec, data)
    for site, value in draws.items():
        assert value.shape == (7,) + shapes[site]


@pytest.mark.parametrize("name", EXACT)
def test_exact_posterior_has_site_shapes(name):
    spec, data = default_data(name)
    shapes = site_shapes(spec, data)
    latents = tracing.latent_sites(tracing.get_trace(spec.fn, data))
    exact = spec.exact_posterior(**data)
    assert set(exact) == set(latents)
    for site, posterior in exact.items():
        assert tuple(posterior.batch_shape) == shapes[site] and posterior.event_shape == ()
    assert math.isfinite(spec.exact_log_evidence(**data))


@pytest.mark.parametrize("name", EXACT)
def test_exact_forms_need_observations(name):
    spec, data = default_data(name)
    with pytest.raises(ZooError, match="'y'"):
        spec.exact_log_evidence(**covariates(spec, data))


# --------------------------------------------------------------------------------------------
# Beta-Binomial: quadrature over p of the model's own joint density
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", [{}, {"prior_a": 2.5, "prior_b": 4.0}])
def test_beta_binomial_closed_forms_match_quadrature(prior):
    spec, data = default_data("beta_binomial")
    data.update(prior)
    exact = spec.exact_posterior(**data)["p"]
    shift = log_joint(spec, data, p=exact.mean)  # keeps exp() in range; added back below

    def density(p: float) -> float:
        return math.exp(log_joint(spec, data, p=torch.tensor(p)) - shift)

    mass = integrate.quad(density, 0.0, 1.0, epsabs=0, epsrel=1e-11, limit=200)[0]
    mean = integrate.quad(lambda p: p * density(p), 0.0, 1.0, epsabs=0, epsrel=1e-11, limit=200)[0]
    assert spec.exact_log_evidence(**data) == pytest.approx(shift + math.log(mass), abs=1e-7)
    assert float(exact.mean) == pytest.approx(mean / mass, abs=1e-8)


def test_beta_binomial_bayes_factor_of_a_fair_coin_prior():
    # 50 heads in 100 tosses: Beta(30, 30) against Beta(1, 1) has log BF = 1.591.
    spec = get_model("beta_binomial")
    data = prepare(spec, load_dataset("coin_flips", n=100, heads=50))
    informed = spec.exact_log_evidence(**data, prior_a=30.0, prior_b=30.0)
    flat = spec.exact_log_evidence(**data)
    assert round(informed - flat, 3) == 1.591
    # Under Beta(1, 1) every count 0..n is equally likely a priori: p(y) = 1 / (n + 1).
    assert flat == pytest.approx(-math.log(101), abs=1e-10)


# --------------------------------------------------------------------------------------------
# Normal-Normal: quadrature over mu
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heteroscedastic", [False, True])
def test_normal_normal_closed_forms_match_quadrature(heteroscedastic):
    spec, data = default_data("normal_normal", prior_loc=1.0, prior_scale=0.8)
    if heteroscedastic:  # one known noise scale per observation
        data["sigma"] = torch.linspace(0.5, 2.0, data["N"])
    exact = spec.exact_posterior(**data)["mu"]
    centre = float(data["y"].mean())
    shift = log_joint(spec, data, mu=torch.tensor(centre))

    def density(mu: float) -> float:
        return math.exp(log_joint(spec, data, mu=torch.tensor(mu)) - shift)

    lo, hi = centre - 3.0, centre + 3.0  # > 10 posterior sd either side (sd < 0.3 here)
    moments = [
        integrate.quad(lambda m: m**k * density(m), lo, hi, epsabs=0, epsrel=1e-11, limit=200)[0]
        for k in range(3)
    ]
    mean = moments[1] / moments[0]
    sd = math.sqrt(moments[2] / moments[0] - mean**2)
    assert spec.exact_log_evidence(**data) == pytest.approx(shift + math.log(moments[0]), abs=1e-7)
    assert float(exact.mean) == pytest.approx(mean, abs=1e-8)
    assert float(exact.stddev) == pytest.approx(sd, rel=1e-6)


def test_normal_normal_needs_data_or_size():
    spec = get_model("normal_normal")
    with pytest.raises(ZooError, match="'N'"):
        spec.fn(sigma=1.0)
    assert spec.fn(N=4).shape == (4,)


# --------------------------------------------------------------------------------------------
# Normal-inverse-gamma regression: Bayes' rule at two parameter values
# --------------------------------------------------------------------------------------------

HYPERPARAMETERS = [{}, {"prior_a": 3.0, "prior_b": 2.0, "prior_scale": 0.7}]


def nig_args(spec, **hyper) -> dict:
    """The model's NIG hyperparameters: its defaults, overridden by ``hyper``."""
    params = inspect.signature(spec.fn).parameters
    return {k: hyper.get(k, params[k].default) for k in ("prior_a", "prior_b", "prior_scale")}


def design(name: str, data: dict) -> torch.Tensor:
    if name == "linear_regression":
        return data["x"]
    return polynomial_features(data["x"], int(name.rsplit("d", 1)[1]))


@pytest.mark.parametrize("hyper", HYPERPARAMETERS)
@pytest.mark.parametrize("name", ["linear_regression", "polynomial_d0", "polynomial_d3"])
def test_nig_evidence_by_bayes_rule(name, hyper):
    spec, data = default_data(name, **hyper)
    post = nig_posterior(design(name, data), data["y"], **nig_args(spec, **hyper))
    log_evidence = spec.exact_log_evidence(**data)
    # Two quite different points: the posterior mean, and a point far out in the tails.
    points = [
        (post.loc, post.rate / (post.concentration + 1)),
        (
            post.loc + 0.3 * torch.arange(1.0, len(post.loc) + 1),
            2.5 * post.rate / post.concentration,
        ),
    ]
    for beta, sigma2 in points:
        joint = log_joint(spec, data, beta=beta, sigma2=sigma2)
        assert joint - float(nig_log_joint_posterior(post, beta, sigma2)) == pytest.approx(
            log_evidence, abs=1e-8
        )


@pytest.mark.parametrize("name", ["linear_regression", "polynomial_d3"])
def test_nig_marginals_integrate_the_joint(name):
    # beta[d] | y is the Normal(m_d, sigma2 V_dd) mixed over sigma2 | y ~ InverseGamma.
    spec, data = default_data(name, prior_scale=1.5)
    exact = spec.exact_posterior(**data)
    args = nig_args(spec, prior_scale=1.5)
    post = nig_posterior(design(name, data), data["y"], **args)
    sigma2 = exact["sigma2"]
    assert float(sigma2.concentration) == pytest.approx(args["prior_a"] + len(data["y"]) / 2)
    num_features = len(post.loc)
    for d in range(num_features):
        m, v = float(post.loc[d]), float(post.cov[d, d])
        # at the centre and 3 scales out, where a wrong scale or dof would show
        for b in (m, m + 3 * float(exact["beta"].scale[d])):

            def integrand(s2: float) -> float:
                log_normal = stats.norm.logpdf(b, m, math.sqrt(v * s2))
                return math.exp(log_normal + float(sigma2.log_prob(torch.tensor(s2))))

            numeric = integrate.quad(integrand, 0.0, np.inf, epsabs=0, epsrel=1e-10, limit=200)[0]
            marginal = float(exact["beta"].log_prob(torch.full((num_features,), b))[d])
            assert marginal == pytest.approx(math.log(numeric), abs=1e-7)


def test_polynomial_d1_is_linear_regression_on_one_and_x():
    spec, data = default_data("polynomial_d1")
    x = torch.stack([torch.ones_like(data["x"]), data["x"]], dim=-1)
    linear = get_model("linear_regression")
    assert spec.exact_log_evidence(**data) == pytest.approx(
        linear.exact_log_evidence(x=x, y=data["y"]), abs=1e-10
    )
    a, b = spec.exact_posterior(**data)["beta"], linear.exact_posterior(x=x, y=data["y"])["beta"]
    torch.testing.assert_close(a.loc, b.loc)
    torch.testing.assert_close(a.scale, b.scale)


def test_polynomial_evidence_picks_the_true_degree():
    data = load_dataset("polynomial_synthetic")  # generated by a quadratic
    evidence = [get_model(f"polynomial_d{k}").exact_log_evidence(**data) for k in range(6)]
    assert int(np.argmax(evidence)) == 2


def test_polynomial_models_pickle_and_hide_their_degree():
    for k in range(6):
        spec = get_model(f"polynomial_d{k}")
        assert "degree" not in spec.arguments  # bound, so no recipe can change it
        clone = pickle.loads(pickle.dumps(spec.fn))  # chains may run in subprocesses
        x = torch.linspace(-1, 1, 4)
        trace = poutine.trace(clone).get_trace(x=x)
        assert trace.nodes["beta"]["value"].shape == (k + 1,)
        assert f"degree {k}" in spec.summary_line


# --------------------------------------------------------------------------------------------
# Priors written out by hand
# --------------------------------------------------------------------------------------------


def test_eight_schools_priors_match_posteriordb():
    data = load_dataset("eight_schools")
    y, sigma = data["y"].numpy(), data["sigma"].numpy()
    mu, tau = 1.3, 2.7
    trans = np.linspace(-1.5, 1.5, 8)
    theta = mu + tau * trans
    hyper = stats.norm.logpdf(mu, 0, 5) + stats.halfcauchy.logpdf(tau, scale=5)
    likelihood = stats.norm.logpdf(y, theta, sigma).sum()
    centered = get_model("eight_schools_centered")
    values = {"mu": torch.tensor(mu), "tau": torch.tensor(tau), "theta": torch.tensor(theta)}
    got = log_joint(centered, data, **values)
    expected = hyper + stats.norm.logpdf(theta, mu, tau).sum() + likelihood
    assert got == pytest.approx(expected, abs=1e-9)
    noncentered = get_model("eight_schools_noncentered")
    values = {"mu": torch.tensor(mu), "tau": torch.tensor(tau), "theta_trans": torch.tensor(trans)}
    got = log_joint(noncentered, data, **values)
    assert got == pytest.approx(hyper + stats.norm.logpdf(trans).sum() + likelihood, abs=1e-9)
    trace = poutine.trace(poutine.condition(noncentered.fn, values)).get_trace(**data)
    np.testing.assert_allclose(trace.nodes["theta"]["value"].numpy(), theta)


@pytest.mark.parametrize("name", ["eight_schools_centered", "eight_schools_noncentered"])
def test_eight_schools_sites_match_posteriordb_reference(name):
    from zoo.datasets import posteriordb_reference

    if not (POSTERIORDB / EIGHT_SCHOOLS_REF).is_dir():
        pytest.skip(f"{POSTERIORDB / EIGHT_SCHOOLS_REF} is absent (reference data: ../shared/data)")
    spec, data = default_data(name)
    shapes = site_shapes(spec, data)
    for site, draws in posteriordb_reference(EIGHT_SCHOOLS_REF, root=POSTERIORDB).items():
        assert site in shapes and draws.shape[2:] == shapes[site], site


def test_logistic_regression_log_joint_by_hand():
    spec, data = default_data("logistic_regression", prior_scale=1.7)
    x, y = data["x"].numpy(), data["y"].numpy()
    alpha, beta = 0.4, np.array([-0.5, 1.0, 0.25])
    logits = alpha + x @ beta
    # log Bernoulli(y | logits) = y * logits - log(1 + e^logits)
    expected = (
        stats.norm.logpdf(alpha, 0, 1.7)
        + stats.norm.logpdf(beta, 0, 1.7).sum()
        + (y * logits - np.logaddexp(0, logits)).sum()
    )
    got = log_joint(spec, data, alpha=torch.tensor(alpha), beta=torch.tensor(beta))
    assert got == pytest.approx(expected, abs=1e-9)


SUBSAMPLED = REGRESSIONS + ["robust_regression", "poisson_regression", "negbinomial_regression",
                            "ordinal_logistic", "horseshoe_regression"]


@pytest.mark.parametrize("name", SUBSAMPLED)
def test_subsampling_scales_the_likelihood(name):
    spec, data = default_data(name)
    num_data = data["y"].shape[0]
    trace = poutine.trace(spec.fn).get_trace(**data, subsample_size=10)
    site = trace.nodes["y"]
    idx = trace.nodes["data"]["value"]
    assert site["value"].shape == (10,) and site["scale"] == pytest.approx(num_data / 10)
    assert torch.equal(site["value"], data["y"][idx])
    # the batch's likelihood is the full model's at the same rows, covariates (and offset) too
    latents = {k: s["value"] for k, s in trace.nodes.items()
               if s["type"] == "sample" and not s["is_observed"] and k != "data"}
    full = poutine.trace(poutine.condition(spec.fn, latents)).get_trace(**data)
    np.testing.assert_allclose(site["fn"].log_prob(site["value"]).numpy(),
                               full.nodes["y"]["fn"].log_prob(data["y"])[..., idx].numpy(),
                               rtol=1e-12)


def test_methods_offered():
    for name in list_models():
        assert {"nuts", "svi"} <= set(get_model(name).methods), name
    # Laplace needs a mode with a positive-definite Hessian: not the centered funnel's.
    assert "laplace" not in get_model("eight_schools_centered").methods


def test_centered_eight_schools_has_no_mode():
    # Why it offers no Laplace: the joint density (times the log-tau Jacobian) grows without
    # bound down the funnel, theta[j] = mu and tau -> 0.
    spec, data = default_data("eight_schools_centered")
    mu = torch.tensor(4.0)

    def unconstrained_log_joint(tau: float) -> float:
        t = torch.tensor(tau)
        return log_joint(spec, data, mu=mu, tau=t, theta=mu.expand(8)) + math.log(tau)

    values = [unconstrained_log_joint(t) for t in (1e-1, 1e-3, 1e-5)]
    assert values[0] < values[1] < values[2]
    assert values[2] - values[1] == pytest.approx(7 * math.log(100), rel=1e-3)
