"""SVI's default ELBO path: JIT-compiled (and particles vectorised) where the model allows it,
checked before the first step, with a recorded fallback to the plain path where it does not."""

from __future__ import annotations

import re

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import zoo
from zoo.data import prepare
from zoo.fit import default_dtype

from conftest import SMOKE, assert_matches_normal_normal, default_data




@pytest.mark.parametrize(
    "name,settings,path",
    [
        ("eight_schools_noncentered", {}, "jit"),
        ("eight_schools_noncentered", {"num_particles": 4}, "jit+vectorised"),
        ("eight_schools_noncentered", {"jit": False}, "plain"),
        ("eight_schools_noncentered", {"jit": False, "num_particles": 4}, "plain+vectorised"),
        # Pyro's JitTraceMeanField_ELBO re-traces every step unless zoo's workaround keeps the
        # trace; re-tracing would also fail the check (its random numbers fall out of step).
        ("beta_binomial", {"guide": "model", "elbo": "meanfield"}, "jit"),
        ("linear_regression", {"guide": "lowrank_mvn", "num_particles": 3}, "jit+vectorised"),
    ],
)
def test_the_jit_path_is_the_default_for_registered_models(name, settings, path):
    fit = zoo.fit(name, default_data(name), method="svi", seed=0, **{**SMOKE["svi"], **settings})
    assert fit.info["elbo_path"] == path
    assert "elbo_fallback" not in fit.info
    assert np.isfinite(fit.info["elbo"]).all()


def test_the_jit_path_is_reproducible():
    data = default_data("eight_schools_noncentered")
    a, b = (zoo.fit("eight_schools_noncentered", data, method="svi", seed=3, num_particles=2,
                    **SMOKE["svi"]) for _ in range(2))
    assert a.info["elbo_path"] == "jit+vectorised"
    assert a.info["elbo"] == b.info["elbo"]
    np.testing.assert_array_equal(a.posterior["tau"], b.posterior["tau"])


def branchy(y=None):
    """Python control flow on a latent: a trace would keep the first branch it saw."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    loc = mu if float(mu) > 0 else -mu
    with pyro.plate("data", 5):
        pyro.sample("y", dist.Normal(loc, 1.0), obs=y)


def numpy_noise(y=None):
    """Randomness outside torch raises no tracer warning, but a trace freezes it: only the
    numerical check against the plain ELBO can see it."""
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    shift = 0.5 * float(np.random.normal())
    with pyro.plate("data", 5):
        pyro.sample("y", dist.Normal(mu + shift, 1.0), obs=y)


@pytest.mark.parametrize(
    "model,reason",
    [(branchy, r"turns a tensor into a Python value"),
     (numpy_noise, r"compiled ELBO differs from the plain one")],
)
def test_a_model_the_trace_would_get_wrong_falls_back_to_plain(model, reason):
    data = {"y": torch.tensor([0.3, 1.2, 0.8, 1.9, 1.1])}
    fit = zoo.fit(model, data, method="svi", seed=1, **SMOKE["svi"])
    assert fit.info["elbo_path"] == "plain"
    assert re.search(reason, fit.info["elbo_fallback"]), fit.info["elbo_fallback"]
    assert "\n" not in fit.info["elbo_fallback"]
    # The refused attempt leaves nothing behind: the fit is the one jit = false gives.
    plain = zoo.fit(model, data, method="svi", seed=1, jit=False, **SMOKE["svi"])
    assert "elbo_fallback" not in plain.info
    assert fit.info["elbo"] == plain.info["elbo"]
    np.testing.assert_array_equal(fit.posterior["mu"], plain.posterior["mu"])


def test_the_jit_path_recovers_a_conjugate_posterior():
    # normal_normal's posterior over mu is Gaussian, so AutoNormal contains it exactly. As in
    # test_inference's full-rank check: 4000 guide draws must match the exact mean to 4 Monte
    # Carlo standard errors plus 2% of a posterior sd (optimiser noise), and the sd to 10%.
    name = "normal_normal"
    data = default_data(name)
    fit = zoo.fit(name, data, method="svi", seed=0, num_steps=3000, lr=0.02, num_samples=4000,
                  num_particles=4)
    assert fit.info["elbo_path"] == "jit+vectorised"
    assert_matches_normal_normal(fit)


def test_minibatches_are_drawn_afresh_at_every_compiled_step():
    # With a point-mass guide and a vanishing learning rate the loss changes only with the
    # minibatch: a trace that froze the subsample indices would give one loss throughout.
    fit = zoo.fit("linear_regression", default_data("linear_regression"), method="svi",
                  guide="delta", subsample_size=20, num_particles=2, lr=1e-12, lr_decay=1.0,
                  num_steps=30, num_samples=10)
    assert fit.info["elbo_path"] == "jit+vectorised"
    assert len(set(np.round(fit.info["elbo"], 9))) > 20


def test_minibatch_svi_on_the_jit_path_reaches_the_exact_posterior():
    # Minibatches of 20 from 100 points, full-rank Gaussian guide: the NIG posterior's beta
    # marginals (Student-t with 200+ degrees of freedom, so nearly Gaussian) must be matched to
    # 0.3 posterior sd in the mean and 10% in the sd. One frozen batch of 20, scaled by 5, would
    # move the means by about two posterior sds.
    name = "linear_regression"
    data = default_data(name)
    fit = zoo.fit(name, data, method="svi", seed=0, guide="mvn", subsample_size=20,
                  num_steps=3000, lr=0.02, num_samples=4000)
    assert fit.info["elbo_path"] == "jit"
    with default_dtype(torch.float64):
        exact = zoo.get_model(name).exact_posterior(**prepare(zoo.get_model(name), data))["beta"]
    draws = fit.posterior["beta"].reshape(-1, exact.batch_shape[-1])
    sd = exact.stddev.numpy()
    assert (np.abs(draws.mean(0) - exact.mean.numpy()) < 0.3 * sd).all()
    assert (np.abs(draws.std(0) / sd - 1) < 0.1).all()


def test_bench_svi_quick_has_a_row_per_model_and_particle_count():
    from zoo.bench import BenchResult
    from zoo.bench import svi as bench

    result = bench.run(quick=True)
    assert isinstance(result, BenchResult)
    rows = result.data["rows"]
    assert [(r["model"], r["particles"]) for r in rows] == [
        (c.model, p) for c in bench.CASES for p in bench.PARTICLES]
    for r in rows:
        assert r["speedup"] > 0 and np.isfinite(r["speedup"])
        assert r["zoo"]["path"].startswith("jit")  # every benchmark model allows the JIT path
        assert f"| `{r['model']}` | {r['particles']} |" in result.markdown
