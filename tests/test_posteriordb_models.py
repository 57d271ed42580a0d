"""posteriordb in the zoo: every shared posterior has a registered model with Stan's density,
flat (improper) priors fit, and the ``posteriordb`` recipe's check says PASS and FAIL rightly.

Densities are checked against numpy/scipy transcriptions of the Stan programs written here
independently of zoo.models (Stan's ``~`` drops constants and a transformed outcome's Jacobian is
a constant too, so log densities are compared as differences between two parameter points).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from scipy import stats

import zoo
from zoo import posteriordb_check, tracing
from zoo.data import prepare
from zoo.datasets import list_posteriors, posteriordb_reference
from zoo.errors import ZooError
from zoo.models.arm import VARIANTS
from zoo.registry import get_model, list_models, load_dataset

from conftest import SHARED_DATA, posteriordb_dir

pytestmark = pytest.mark.usefixtures("float64")
ROOT = SHARED_DATA / "posteriordb"
SHARED = sorted(p.name for p in ROOT.iterdir() if (p / "data.json.zip").is_file()) \
    if ROOT.is_dir() else []
SERVED = sorted(p for n in list_models() for p in get_model(n).posteriordb)


def needs_shared() -> None:
    if not SHARED:
        pytest.skip(f"{ROOT} is absent: the posteriordb reference data lives in ../shared/data")


def posterior_data(posterior: str) -> tuple:
    posteriordb_dir(posterior)
    name = posteriordb_check.model_for(posterior)
    spec = get_model(name)
    return spec, prepare(spec, load_dataset("posteriordb", posterior=posterior))


def log_joint(spec, data: dict, values: dict) -> float:
    trace = poutine.trace(poutine.condition(spec.fn, values)).get_trace(**data)
    return float(trace.log_prob_sum())


# -- the registry covers posteriordb ------------------------------------------------------------

# Not ported yet (issue 18): the ODE models, whose adaptive solve is still too slow for the
# recipe (branch wip/ode); the recipe reports them as FAIL rows.
NOT_PORTED = {"hudson_lynx_hare-lotka_volterra", "one_comp_mm_elim_abs-one_comp_mm_elim_abs"}


def test_every_shared_posterior_is_served_by_one_model():
    needs_shared()
    assert set(SERVED) == set(SHARED) - NOT_PORTED, (set(SHARED) - set(SERVED), set(SERVED) - set(SHARED))
    assert len(SERVED) == len(set(SERVED)), "a posterior served by two models"
    assert len(SHARED) == 40


@pytest.mark.parametrize("posterior", SERVED)
def test_model_has_the_reference_parameters(posterior):
    spec, data = posterior_data(posterior)
    trace = tracing.structure(spec.fn, data)
    for site, draws in posteriordb_reference(posterior).items():
        assert site in trace.nodes, f"{spec.name} lacks Stan's parameter {site!r}"
        assert tuple(trace.nodes[site]["value"].shape) == draws.shape[2:], site


def test_unknown_posterior_is_named():
    with pytest.raises(ZooError, match="earnings-earn_hieght.*did you mean.*earn_height"):
        posteriordb_check.model_for("earnings-earn_hieght")


# -- the ARM regressions: each Stan program's design and outcome, transcribed ---------------------

def _z(x, scale=1.0):
    return (x - x.mean()) / (scale * x.std(ddof=1))


def _lv(d):
    return np.log(d["diam1"] * d["diam2"] * d["canopy_height"])


STAN = {  # variant -> (outcome f(y) as Stan computes it, predictors after the intercept)
    "earn_height": (lambda d: d["earn"], lambda d: [d["height"]]),
    "log10earn_height": (lambda d: np.log10(d["earn"]), lambda d: [d["height"]]),
    "logearn_height": (lambda d: np.log(d["earn"]), lambda d: [d["height"]]),
    "logearn_height_male": (lambda d: np.log(d["earn"]), lambda d: [d["height"], d["male"]]),
    "logearn_interaction": (lambda d: np.log(d["earn"]),
                            lambda d: [d["height"], d["male"], d["height"] * d["male"]]),
    "logearn_interaction_z": (lambda d: np.log(d["earn"]),
                              lambda d: [_z(d["height"]), d["male"], _z(d["height"]) * d["male"]]),
    "logearn_logheight_male": (lambda d: np.log(d["earn"]),
                               lambda d: [np.log(d["height"]), d["male"]]),
    "kidscore_momhs": (lambda d: d["kid_score"], lambda d: [d["mom_hs"]]),
    "kidscore_momiq": (lambda d: d["kid_score"], lambda d: [d["mom_iq"]]),
    "kidscore_momhsiq": (lambda d: d["kid_score"], lambda d: [d["mom_hs"], d["mom_iq"]]),
    "kidscore_interaction": (lambda d: d["kid_score"],
                             lambda d: [d["mom_hs"], d["mom_iq"], d["mom_hs"] * d["mom_iq"]]),
    "kidscore_interaction_c": (
        lambda d: d["kid_score"],
        lambda d: [d["mom_hs"] - d["mom_hs"].mean(), d["mom_iq"] - d["mom_iq"].mean(),
                   (d["mom_hs"] - d["mom_hs"].mean()) * (d["mom_iq"] - d["mom_iq"].mean())]),
    "kidscore_interaction_c2": (
        lambda d: d["kid_score"],
        lambda d: [d["mom_hs"] - 0.5, d["mom_iq"] - 100, (d["mom_hs"] - 0.5) * (d["mom_iq"] - 100)]),
    "kidscore_interaction_z": (
        lambda d: d["kid_score"],
        lambda d: [_z(d["mom_hs"], 2), _z(d["mom_iq"], 2), _z(d["mom_hs"], 2) * _z(d["mom_iq"], 2)]),
    "kidscore_mom_work": (lambda d: d["kid_score"],
                          lambda d: [1.0 * (d["mom_work"] == k) for k in (2, 3, 4)]),
    "mesquite": (lambda d: d["weight"],
                 lambda d: [d["diam1"], d["diam2"], d["canopy_height"], d["total_height"],
                            d["density"], d["group"]]),
    "logmesquite": (lambda d: np.log(d["weight"]),
                    lambda d: [np.log(d["diam1"]), np.log(d["diam2"]), np.log(d["canopy_height"]),
                               np.log(d["total_height"]), np.log(d["density"]), d["group"]]),
    "logmesquite_logvolume": (lambda d: np.log(d["weight"]), lambda d: [_lv(d)]),
    "logmesquite_logva": (lambda d: np.log(d["weight"]),
                          lambda d: [_lv(d), np.log(d["diam1"] * d["diam2"]), d["group"]]),
    "logmesquite_logvas": (lambda d: np.log(d["weight"]),
                           lambda d: [_lv(d), np.log(d["diam1"] * d["diam2"]),
                                      np.log(d["diam1"] / d["diam2"]), np.log(d["total_height"]),
                                      np.log(d["density"]), d["group"]]),
    "logmesquite_logvash": (lambda d: np.log(d["weight"]),
                            lambda d: [_lv(d), np.log(d["diam1"] * d["diam2"]),
                                       np.log(d["diam1"] / d["diam2"]), np.log(d["total_height"]),
                                       d["group"]]),
    "nes": (lambda d: d["partyid7"],
            lambda d: [d["real_ideo"], d["race_adj"], 1.0 * (d["age_discrete"] == 2),
                       1.0 * (d["age_discrete"] == 3), 1.0 * (d["age_discrete"] == 4), d["educ1"],
                       d["gender"], d["income"]]),
}
CAUCHY_SIGMA = {"kidscore_momhs", "kidscore_momiq", "kidscore_momhsiq", "kidscore_interaction"}


def test_every_arm_variant_is_transcribed():
    assert set(STAN) == set(VARIANTS)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_arm_log_density_is_the_stan_programs(variant):
    posterior = VARIANTS[variant].posteriors[0]
    spec, data = posterior_data(posterior)
    assert spec.name == variant and get_model(variant).family == "arm"
    d = {k: v.numpy() if torch.is_tensor(v) else v for k, v in data.items()}
    outcome, predictors = STAN[variant]
    y, X = outcome(d), np.column_stack([np.ones(len(outcome(d)))] + predictors(d))
    rng = np.random.default_rng(0)
    fit_beta = np.linalg.lstsq(X, y, rcond=None)[0]
    points = [(fit_beta + 0.01 * rng.normal(size=X.shape[1]), 0.9 * y.std()),
              (fit_beta * 0.95, 1.3 * y.std())]

    def stan(beta, sigma):
        lp = stats.norm.logpdf(y, X @ beta, sigma).sum()
        return lp + (stats.cauchy.logpdf(sigma, 0, 2.5) if variant in CAUCHY_SIGMA else 0.0)

    ours = [log_joint(spec, data, {"beta": torch.tensor(b), "sigma": torch.tensor(s)})
            for b, s in points]
    assert ours[0] - ours[1] == pytest.approx(stan(*points[0]) - stan(*points[1]), abs=1e-6)


@pytest.mark.parametrize("posterior", [p for p in SERVED if p.startswith(("earnings", "kidiq",
                                                                            "mesquite", "nes"))])
def test_arm_priors_are_flat(posterior):
    spec, data = posterior_data(posterior)
    improper = tracing.improper_sites(tracing.structure(spec.fn, data))
    assert "beta" in improper  # Stan: no ~ for beta
    assert ("sigma" in improper) == (spec.name not in CAUCHY_SIGMA)


def test_diamonds_log_density_is_the_stan_programs():
    spec, data = posterior_data("diamonds-diamonds")
    X, Y = data["X"].numpy(), data["Y"].numpy()
    Xc = X[:, 1:] - X[:, 1:].mean(0)
    rng = np.random.default_rng(1)

    def stan(b, intercept, sigma):  # brms: target += ... with the half-t's normalising term
        return (stats.norm.logpdf(b, 0, 1).sum() + stats.t.logpdf(intercept, 3, 8, 10)
                + stats.t.logpdf(sigma, 3, 0, 10) - stats.t.logsf(0, 3, 0, 10)
                + stats.norm.logpdf(Y, intercept + Xc @ b, sigma).sum())

    for _ in range(2):
        b, c, s = rng.normal(0, 0.3, Xc.shape[1]), 7.5 + rng.normal(), 1.0 + rng.random()
        ours = log_joint(spec, data, {"b": torch.tensor(b), "Intercept": torch.tensor(c),
                                      "sigma": torch.tensor(s)})
        assert ours == pytest.approx(stan(b, c, s), rel=1e-10)  # every term normalised: equal


def test_gp_regr_log_density_is_the_stan_programs():
    spec, data = posterior_data("gp_pois_regr-gp_regr")
    x, y = data["x"].numpy(), data["y"].numpy()

    def stan(rho, alpha, sigma):  # cov = alpha² exp(-d²/(2 rho²)) + sigma I (sigma, not sigma²)
        cov = alpha**2 * np.exp(-(x[:, None] - x[None]) ** 2 / (2 * rho**2)) + sigma * np.eye(len(x))
        return (stats.gamma.logpdf(rho, 25, scale=1 / 4) + stats.halfnorm.logpdf(alpha, 0, 2)
                + stats.halfnorm.logpdf(sigma, 0, 1)
                + stats.multivariate_normal.logpdf(y, np.zeros(len(x)), cov))

    for point in [(6.0, 1.2, 0.3), (5.1, 2.0, 0.8)]:
        ours = log_joint(spec, data, dict(zip(("rho", "alpha", "sigma"), map(torch.tensor, point))))
        assert ours == pytest.approx(stan(*point), rel=1e-10)


# -- flat (improper) priors in a user's plain model ---------------------------------------------

def flat_normal_mean(y=None, sigma=2.0):
    """mu flat on R; y ~ Normal(mu, sigma) with sigma known: mu | y ~ Normal(ybar, sigma/√n)."""
    mu = pyro.sample("mu", dist.ImproperUniform(dist.constraints.real, (), ()))
    with pyro.plate("data", len(y)):
        pyro.sample("y", dist.Normal(mu, sigma), obs=y)


FLAT_Y = torch.tensor(np.random.default_rng(3).normal(1.5, 2.0, 40))


@pytest.mark.parametrize("method,settings", [
    ("mcmc", {}),
    ("nuts", {"num_warmup": 300, "num_samples": 500, "num_chains": 2, "jit": False}),
    ("laplace", {}),
])
def test_flat_prior_gives_the_exact_posterior(method, settings):
    # mean within 4 MCSE (Laplace: its draws' MCSE, 1/sqrt(num_samples) sd) and sd within 10%
    fit = zoo.fit(flat_normal_mean, {"y": FLAT_Y}, method=method, seed=0, **settings)
    mu = fit.posterior["mu"].reshape(-1)
    exact_mean, exact_sd = float(FLAT_Y.mean()), 2.0 / math.sqrt(len(FLAT_Y))
    mcse = float(zoo.diagnostics.summary(fit).loc["mu", "mcse_mean"])
    assert abs(mu.mean() - exact_mean) < 4 * mcse, (mu.mean(), exact_mean, mcse)
    assert mu.std() == pytest.approx(exact_sd, rel=0.10)
    assert fit.improper_sites == ["mu"] and fit.prior() == {}
    with pytest.raises(ZooError, match="improper prior"):
        fit.log_evidence()


def test_flat_prior_refuses_sbc():
    spec = get_model("log10earn_height")
    posteriordb_dir(spec.posteriordb[0])
    from zoo.sbc import sbc

    with pytest.raises(ZooError, match="flat \\(improper\\) prior on \\['beta', 'sigma'\\]"):
        sbc("log10earn_height", "laplace", num_simulations=2)


# -- the posteriordb check and recipe -----------------------------------------------------------

def test_check_passes_a_right_model_and_fails_a_shifted_reference(monkeypatch):
    posterior = "kidiq-kidscore_momhs"
    posteriordb_dir(posterior)
    row, table = posteriordb_check.check(posterior)
    assert row["verdict"] == "PASS", row
    assert row["parameters"] == len(table) == 3 and row["checks_passed"]
    # the same fit against a reference whose beta[1] sits 10 posterior sds away must FAIL
    true_reference = posteriordb_reference(posterior)

    def shifted(name, root=None):
        ref = {k: v.copy() for k, v in true_reference.items()}
        ref["beta"][..., 1] += 10 * ref["beta"][..., 1].std()
        return ref

    monkeypatch.setattr("zoo.datasets.posteriordb_reference", shifted)
    row, _ = posteriordb_check.check(posterior)
    assert row["verdict"] == "FAIL" and "mean of beta[1]" in row["reason"]


def test_recipe_writes_one_row_per_posterior(tmp_path):
    posteriordb_dir("kidiq-kidscore_momhs")
    from zoo import run

    args = ["posteriordb", "--smoke", "--quiet", "--executor", "serial", "--out", str(tmp_path),
            "--set", "smoke.posteriordb.posteriors=['kidiq-kidscore_momhs']"]
    assert run.main(args) == 0
    report = (tmp_path / "posteriordb-smoke" / "report.md").read_text()
    assert "**1 of 1 PASS**" in report and "| kidiq-kidscore_momhs | PASS | 3 |" in report
    row = json.loads((tmp_path / "posteriordb-smoke" / "kidiq-kidscore_momhs" / "result.json")
                     .read_text())
    assert row["model"] == "kidscore_momhs"


def test_recipe_names_an_unknown_posterior(tmp_path):
    needs_shared()
    from zoo import run

    code = run.main(["posteriordb", "--check", "--set", "posteriordb.posteriors=['nes1971-nes']"])
    assert code == 2


@pytest.mark.slow
@pytest.mark.parametrize("posterior", SERVED)
def test_posterior_passes_at_the_defaults(posterior):
    # PASS as the recipe defines it (zoo.posteriordb_check): every reference mean within 4
    # combined MCSE (false alarm ~6e-5 per parameter), sds within 10%, the fit's own checks.
    posteriordb_dir(posterior)
    row, table = posteriordb_check.check(posterior)
    assert row["verdict"] == "PASS", (row, table)


# -- dependent bounds (Stan's real<lower=a> b) ------------------------------------------------

def ordered_pair_bounded():
    """a, b ~ Normal(0, 1) restricted to b > a, with b declared on (a, inf) by zoo's block."""
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = zoo.models.bounded("b", lower=a)
    pyro.factor("b_prior", dist.Normal(0.0, 1.0).log_prob(b))


def ordered_pair_explicit():
    """The same density with the transform written out: b = a + exp(d), log|db/dd| = d."""
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    d = pyro.sample("d", dist.ImproperUniform(dist.constraints.real, (), ()))
    b = pyro.deterministic("b", a + d.exp())
    pyro.factor("b_prior", dist.Normal(0.0, 1.0).log_prob(b) + d)


def test_dependent_bound_equals_the_explicit_transform():
    # the same log density at any (a, u), u the unconstrained coordinate
    for a, u in [(0.3, -1.2), (-2.0, 0.7)]:
        bounded = log_joint(get_spec(ordered_pair_bounded), {},
                            {"a": torch.tensor(a), "b_unconstrained": torch.tensor(u)})
        explicit = log_joint(get_spec(ordered_pair_explicit), {},
                             {"a": torch.tensor(a), "d": torch.tensor(u)})
        assert bounded == pytest.approx(explicit, abs=1e-12)


def test_dependent_bound_samples_the_truncated_pair():
    # For iid a, b ~ N(0, 1) conditioned on b > a: E[b] = -E[a] = 1/sqrt(pi) = 0.5642
    # (E[max of two standard normals]); means within 4 MCSE.
    fit = zoo.fit(ordered_pair_bounded, {}, method="mcmc", seed=0)
    summary = zoo.diagnostics.summary(fit)
    for site, exact in (("a", -1 / math.sqrt(math.pi)), ("b", 1 / math.sqrt(math.pi))):
        assert abs(summary.loc[site, "mean"] - exact) < 4 * summary.loc[site, "mcse_mean"]
    assert (fit.posterior["b"] > fit.posterior["a"]).all()


def test_a_support_that_moves_with_a_parameter_is_refused():
    def moving(y=None):
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Uniform(a, a + 5.0))  # Pyro would freeze the first (a, a + 5)
        pyro.sample("y", dist.Normal(b, 1.0), obs=y)

    for method in ("mcmc", "laplace"):
        with pytest.raises(ZooError, match="site 'b'.*depend on other parameters.*bounded"):
            zoo.fit(moving, {"y": torch.tensor([1.0])}, method=method)


def get_spec(fn):
    from zoo.registry import ModelSpec

    return ModelSpec(name=fn.__name__, fn=fn, family="user", description="", observed=())
