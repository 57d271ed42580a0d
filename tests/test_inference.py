"""Every registered model × method fits; conjugate posteriors are recovered; Fit is complete."""

from __future__ import annotations

import dataclasses
import warnings
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import zoo
from zoo import tracing
from zoo.data import prepare
from zoo.errors import NotPositiveDefiniteError, ZooError
from zoo.fit import default_dtype
from zoo.inference import resolve_method

from conftest import SMOKE, FixSubsample, assert_matches_normal_normal, default_data, fit_models

CASES = [(m, meth) for m in fit_models() for meth in zoo.get_model(m).methods]




@pytest.mark.parametrize("name,method", CASES)
def test_every_model_fits_with_every_method(name, method):
    data = default_data(name)
    fit = zoo.fit(name, data, method=method, seed=0, **SMOKE[method])
    idata = fit.to_inference_data()
    # a flat (improper) prior has no prior group: nothing to draw from
    prior = ("prior",) if not fit.improper_sites else ()
    for group in ("posterior", "log_likelihood", "posterior_predictive", "observed_data",
                  "sample_stats" if method in ("nuts", "chees") else "posterior", *prior):
        assert group in idata.groups(), f"{name}/{method} lacks {group}"
    assert fit.improper_sites or "prior" in idata.groups()
    chains = SMOKE[method].get("num_chains", 1)
    draws = SMOKE[method]["num_samples"]
    for site, values in fit.posterior.items():
        assert values.shape[:2] == (chains, draws), site
        assert np.isfinite(values).all(), site
    prepared = prepare(zoo.get_model(name), data)
    for site, key in fit.observed.items():
        n_obs = tuple(prepared[key].shape)
        assert idata.log_likelihood[site].shape == (chains, draws) + n_obs
        assert idata.posterior_predictive[site].shape == (chains, draws) + n_obs
        assert np.isfinite(idata.log_likelihood[site].values).all()
    table = fit.summary()
    assert {"mean", "sd", "mcse_mean", "ess_bulk", "ess_tail", "r_hat"} <= set(table.columns)
    assert set(fit.checks()["check"])  # at least one check, whatever the method


@pytest.mark.parametrize("name", zoo.list_models())
def test_prior_predictive_and_log_density_finite(name):
    spec = zoo.get_model(name)
    data = prepare(spec, default_data(name))
    covariates = {k: v for k, v in data.items() if k not in spec.observed}
    pyro.set_rng_seed(0)
    with default_dtype(torch.float64):
        if tracing.improper_sites(tracing.structure(spec.fn, data)):
            pytest.skip(f"{name} has a flat (improper) prior: no prior predictive")
        prior = tracing.prior_draws(spec.fn, covariates, 20)
        for key in spec.observed:
            assert prior[key].shape[1:] == data[key].shape
        trace = tracing.get_trace(spec.fn, data)
        assert torch.isfinite(trace.log_prob_sum())


# --- conjugate models: exact posteriors are the ground truth ------------------------------

@pytest.mark.slow
def test_nuts_matches_exact_posterior_within_4_mcse():
    # beta_binomial and NIG linear regression have exact marginals (Beta, Student-t, InvGamma).
    # Means must lie within 4 MCSE (false-alarm rate ~6e-5 per parameter); sds within 4 × the
    # sd's own Monte Carlo error, approximated by sd / sqrt(2 ESS) (+1% for the ESS estimate).
    for name in ("beta_binomial", "linear_regression", "normal_normal"):
        fit = zoo.fit(name, default_data(name), method="nuts", seed=1,
                      num_warmup=300, num_samples=500, num_chains=2)
        table = zoo.diagnostics.compare_exact(fit)
        ess = fit.summary(round_to="none")["ess_bulk"].reindex(table["param"]).to_numpy()
        assert (table["z"].abs() < 4).all(), table
        sd_tol = 4 * table["exact_sd"] / np.sqrt(2 * ess) + 0.01 * table["exact_sd"]
        assert ((table["sd"] - table["exact_sd"]).abs() < sd_tol).all(), table


def test_laplace_is_exact_on_a_gaussian_posterior():
    # normal_normal: prior and likelihood Gaussian in mu, so N(mode, H^-1) is the posterior.
    name = "normal_normal"
    data = default_data(name)
    fit = zoo.fit(name, data, method="laplace", seed=0)
    with default_dtype(torch.float64):
        exact = zoo.get_model(name).exact_posterior(**prepare(zoo.get_model(name), data))["mu"]
    mode = fit.info["unconstrained_mode"]
    sd = torch.linalg.inv(fit.info["hessian"]).diagonal().sqrt()
    assert torch.allclose(mode, exact.mean.reshape(-1), atol=1e-4, rtol=0)
    assert torch.allclose(sd, exact.stddev.reshape(-1), atol=1e-4, rtol=0)


def test_svi_full_rank_guide_recovers_gaussian_posterior():
    # A full-rank Gaussian guide contains the exact posterior of normal_normal; after
    # optimisation its 4000 draws must match the exact mean to 4 Monte Carlo standard
    # errors plus 2% of a posterior sd (optimiser noise), and the sd to 10%.
    name = "normal_normal"
    data = default_data(name)
    fit = zoo.fit(name, data, method="svi", guide="mvn", seed=0, num_steps=4000, lr=0.02,
                  num_samples=4000, num_particles=4)
    assert_matches_normal_normal(fit)


# --- SVI mechanics -------------------------------------------------------------------------

def test_minibatch_elbo_scales_likelihood_by_n_over_b():
    # With a point-mass guide the ELBO is deterministic given the batch. Averaging the
    # minibatch losses over a partition of the data into batches must give the full-batch
    # loss: the log-likelihood is scaled by N/B and the prior (the KL part) counted once.
    # A KL scaled per batch, or a likelihood left unscaled, breaks the equality.
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoDelta

    spec = zoo.get_model("linear_regression")
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        data = prepare(spec, default_data("linear_regression"))
        n, batch = data["y"].shape[0], 20
        pyro.clear_param_store()
        guide = AutoDelta(spec.fn)
        full = Trace_ELBO().loss(spec.fn, guide, **data)
        losses = []
        for idx in torch.arange(n).reshape(-1, batch):
            with FixSubsample("data", idx):
                losses.append(Trace_ELBO().loss(spec.fn, guide, **data, subsample_size=batch))
        assert len(set(np.round(losses, 6))) > 1  # the batches really differ
        assert np.isclose(np.mean(losses), full, rtol=1e-10)
    finally:
        torch.set_default_dtype(old)


def test_svi_warns_when_elbo_still_falling():
    fit = zoo.fit("linear_regression", default_data("linear_regression"), method="svi",
                  num_steps=400, window=100, lr=0.001, lr_decay=1.0)
    assert any("still improving" in w for w in fit.warnings)
    assert not fit.converged


def test_svi_nan_elbo_is_a_clear_error():
    with pytest.raises(ZooError, match="ELBO became"):
        zoo.fit("logistic_regression", default_data("logistic_regression"), method="svi",
                lr=1e6, lr_decay=1.0, num_steps=300)


# --- NUTS mechanics ------------------------------------------------------------------------

def test_nuts_records_sample_stats_and_reports_divergences():
    # Short and shallow (tree depth 5) for speed; a low target_accept makes the step size too
    # large for the neck of the centered funnel, so transitions diverge (3 at seed 0)
    fit = zoo.fit("eight_schools_centered", default_data("eight_schools_centered"),
                  method="nuts", seed=0, num_warmup=100, num_samples=100, num_chains=2,
                  max_tree_depth=5, target_accept=0.6)
    for key in ("diverging", "energy", "lp", "step_size", "tree_depth", "acceptance_rate"):
        assert fit.sample_stats[key].shape == (2, 100)
    # The divergences must be reported, and the fit not called converged.
    assert fit.sample_stats["diverging"].any()
    assert any("divergent" in w for w in fit.warnings)
    assert not fit.converged


def test_parallel_chains_equal_sequential():
    data = default_data("normal_normal")
    kw = dict(method="nuts", seed=3, num_warmup=30, num_samples=30, num_chains=2)
    a = zoo.fit("normal_normal", data, **kw)
    b = zoo.fit("normal_normal", data, parallel=True, **kw)
    np.testing.assert_array_equal(a.posterior["mu"], b.posterior["mu"])


def test_nuts_jit_gives_eager_draws_and_refuses_a_frozen_value():
    # jit = true traces Pyro's potential with torch.jit: the same arithmetic, so the same draws
    # at the same seed. A model that turns a latent into a Python number would be traced with
    # that number frozen (wrong draws, no error), so NUTS must read the tracer warning and run
    # eagerly, saying so: then its draws are those of jit = false.
    data = default_data("normal_normal")
    kw = dict(method="nuts", seed=2, num_warmup=50, num_samples=50, num_chains=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback here
        jit = zoo.fit("normal_normal", data, jit=True, **kw)
    np.testing.assert_allclose(jit.posterior["mu"],
                               zoo.fit("normal_normal", data, **kw).posterior["mu"], rtol=1e-12)

    def branchy(y=None):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        scale = 1.0 if mu.item() > 0 else 2.0  # a value the trace would keep
        with pyro.plate("obs", len(y)):
            pyro.sample("y", dist.Normal(mu, scale), obs=y)

    y = {"y": torch.tensor([0.5, -1.0, 2.0, 0.3, -0.2])}
    with pytest.warns(RuntimeWarning, match="JIT-compiled potential cannot be used.*Python"):
        a = zoo.fit(branchy, y, jit=True, **kw)
    np.testing.assert_array_equal(a.posterior["mu"], zoo.fit(branchy, y, **kw).posterior["mu"])


@pytest.mark.parametrize("method", ["nuts", "chees"])
def test_same_seed_same_draws(method):
    data = default_data("beta_binomial")
    a = zoo.fit("beta_binomial", data, method=method, seed=5, **SMOKE[method])
    b = zoo.fit("beta_binomial", data, method=method, seed=5, **SMOKE[method])
    np.testing.assert_array_equal(a.posterior["p"], b.posterior["p"])
    c = zoo.fit("beta_binomial", data, method=method, seed=6, **SMOKE[method])
    assert not np.array_equal(a.posterior["p"], c.posterior["p"])


def test_mcmc_means_chees_where_the_model_vectorises():
    data = default_data("beta_binomial")
    assert zoo.fit("beta_binomial", data, method="mcmc", **SMOKE["chees"]).method == "chees"
    spec = zoo.get_model("beta_binomial")
    assert resolve_method("mcmc", spec) == "chees"
    assert resolve_method("mcmc", dataclasses.replace(spec, vectorizable=False)) == "nuts"


# --- Laplace mechanics ---------------------------------------------------------------------

def test_laplace_names_the_direction_when_hessian_is_not_pd():
    def double_well(y=None):
        x = pyro.sample("x", dist.Normal(0.0, 10.0))
        # x = 0 is a stationary point where the log density is a local minimum.
        pyro.factor("well", -5 * (x**2 - 1) ** 2)
        pyro.sample("y", dist.Normal(0.0, 1.0), obs=y)

    with pytest.raises(NotPositiveDefiniteError, match=r"not positive definite.*\bx\b"):
        zoo.fit(double_well, {"y": torch.tensor(0.0)}, method="laplace", adam_steps=50,
                 init_strategy="mean")


# --- plain Pyro functions and bad input ----------------------------------------------------

def test_plain_pyro_function_works_with_every_method():
    def coin(flips=None):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        with pyro.plate("flips", 10):
            pyro.sample("obs", dist.Bernoulli(p), obs=flips)

    flips = torch.tensor([1.0, 1, 1, 0, 1, 0, 1, 1, 1, 0])
    for method, settings in SMOKE.items():
        fit = zoo.fit(coin, {"flips": flips}, method=method, **settings)
        assert fit.observed == {"obs": "flips"}
        assert fit.to_inference_data().log_likelihood["obs"].shape[-1] == 10
        pred = fit.predict()
        assert pred["obs"].shape[-1] == 10


def test_predict_new_covariates_shape():
    data = default_data("linear_regression")
    fit = zoo.fit("linear_regression", data, method="laplace", num_samples=50)
    new_x = torch.as_tensor(np.asarray(data["x"]))[:7]
    pred = fit.predict({"x": new_x})
    assert pred["y"].shape == (50, 7)


@pytest.mark.parametrize(
    "data_change,match",
    [
        (lambda d: {**d, "y": np.where(np.arange(len(d["y"])) == 2, np.nan, np.asarray(d["y"]))},
         r"data\['y'\] has 1 NaN"),
        (lambda d: {**d, "sigma": np.asarray(d["sigma"])[:7]}, r"data\['sigma'\] has shape \(7,\)"),
        (lambda d: {k: v for k, v in d.items() if k != "y"}, r"missing 'y'"),
        (lambda d: {**d, "school": 1}, r"unknown data key .*'school'"),
    ],
)
def test_bad_data_gets_a_one_line_error(data_change, match):
    data = data_change(dict(default_data("eight_schools_centered")))
    with pytest.raises(ZooError, match=match) as err:
        zoo.fit("eight_schools_centered", data, method="laplace")
    assert "\n" not in str(err.value)


def test_unknown_model_method_and_setting():
    data = default_data("normal_normal")
    with pytest.raises(ZooError, match="did you mean 'normal_normal'"):
        zoo.fit("normal_normall", data)
    with pytest.raises(ZooError, match="unknown method 'hmc'"):
        zoo.fit("normal_normal", data, method="hmc")
    with pytest.raises(ZooError, match="num_samplse.*did you mean 'num_samples'"):
        zoo.fit("normal_normal", data, method="nuts", num_samplse=10)
    with pytest.raises(ZooError, match="num_samples must be > 0"):
        zoo.fit("normal_normal", data, method="nuts", num_samples=-5)


def test_svi_with_the_models_own_guide_reaches_the_conjugate_posterior():
    # beta_binomial's own guide is a Beta, the exact posterior's family, so the fitted Beta
    # must match the exact one. The ELBO gradient is noisy and the optimum is flat along
    # a_q + b_q, so we compare what is well determined: the mean to 2% and the sd to 10% (a
    # wrong guide family or a KL counted twice misses the sd by far more).
    name = "beta_binomial"
    data = default_data(name)
    zoo.fit(name, data, method="svi", guide="model", elbo="meanfield", seed=0, num_steps=3000,
            lr=0.05, num_particles=4)
    with default_dtype(torch.float64):
        exact = zoo.get_model(name).exact_posterior(**prepare(zoo.get_model(name), data))["p"]
        fitted = dist.Beta(pyro.param("a_q").detach(), pyro.param("b_q").detach())
        assert abs(float(fitted.mean / exact.mean) - 1) < 0.02
        assert abs(float(fitted.stddev / exact.stddev) - 1) < 0.10
    with pytest.raises(ZooError, match="has no guide of its own"):
        zoo.fit("normal_normal", default_data("normal_normal"), method="svi", guide="model")


@pytest.mark.parametrize(
    "method,settings",
    [
        ("svi", {"guide": "lowrank_mvn", "elbo": "meanfield", "optimizer": "clipped_adam"}),
        ("svi", {"guide": "mvn", "num_particles": 3, "subsample_size": 20}),
        ("svi", {"guide": "delta"}),
        ("nuts", {"jit": True, "dense_mass": True, "init_strategy": "median"}),
        ("chees", {"jit": False, "dense_mass": True, "init_strategy": "median", "num_superchains": 2}),
    ],
)
def test_every_setting_path_runs_and_is_recorded(method, settings):
    # The option combinations the smoke loop above does not reach: each must run and be
    # recorded in fit.settings (reports print them), with the ELBO or draws finite.
    data = default_data("linear_regression")
    fit = zoo.fit("linear_regression", data, method=method, seed=0,
                  **{**SMOKE[method], "num_samples": 30, **settings})
    for key, value in settings.items():
        assert fit.settings[key] == value
    assert all(np.isfinite(v).all() for v in fit.posterior.values())
    if method == "svi":
        assert np.isfinite(fit.info["elbo"]).all()


@pytest.mark.parametrize("fn", [dist.LKJCholesky(3, 2.0), dist.Dirichlet(torch.ones(4)),
                                dist.HalfNormal(torch.ones(2)).to_event(1)])
def test_feasible_start_is_in_the_support_whatever_its_unconstrained_shape(fn):
    # init_strategy="feasible" maps zeros in unconstrained space; for a simplex (K - 1 free
    # values) or a Cholesky factor (its strict lower triangle) that space has another shape.
    value = tracing.feasible({"fn": fn})
    assert value.shape == fn.batch_shape + fn.event_shape
    assert bool(fn.support.check(value).all()) and torch.isfinite(fn.log_prob(value)).all()
