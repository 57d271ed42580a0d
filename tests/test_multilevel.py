"""The multilevel models on real data: Minnesota radon (Gelman & Hill 2007) and Efron & Morris's
1970 batting averages.

The shipped data are checked against numbers printed in Gelman & Hill (least squares and lmer
fits, to their two decimals) and Efron & Morris; every model's log joint against a density
written out with scipy; the closed forms by Bayes' rule; partial pooling by an actual fit.
"""

from __future__ import annotations

import math

import numpy as np
import pyro.poutine as poutine
import pytest
import torch
from scipy import optimize, special, stats

import zoo
from zoo.data import prepare
from zoo.datasets.multilevel import (baseball_heldout, baseball_players, load_baseball_table,
                                     load_radon_table)
from zoo.errors import ZooError
from zoo.models.hierarchical import lkj_correlation_2x2

# Gelman & Hill's printed estimates are rounded to 2 decimals: ours must round to them.
PRINTED = 0.005 + 1e-9


pytestmark = pytest.mark.usefixtures("float64")


def log_joint(name: str, data: dict, **values) -> float:
    """log p(y, theta) from the model's own trace, conditioned on ``values``."""
    spec = zoo.get_model(name)
    data = prepare(spec, data)
    values = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in values.items()}
    trace = poutine.trace(poutine.condition(spec.fn, values)).get_trace(**data)
    return float(trace.log_prob_sum())


def trace_values(name: str, data: dict, **values) -> dict:
    spec = zoo.get_model(name)
    values = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in values.items()}
    data = prepare(spec, data, fitting="y" in data)  # without y the model simulates it
    trace = poutine.trace(poutine.condition(spec.fn, values)).get_trace(**data)
    return {n: s["value"].numpy() for n, s in trace.nodes.items() if s["type"] == "sample"}


def radon_arrays(data: dict) -> tuple:
    return (data["y"].numpy(), data["floor"].numpy(), data["county"].numpy().astype(int),
            data["log_uranium"].numpy())


# --------------------------------------------------------------------------------------------
# The radon data
# --------------------------------------------------------------------------------------------


def test_radon_file_is_gelman_and_hill_minnesota():
    table = load_radon_table()
    assert list(table.columns) == ["county", "floor", "log_radon", "log_uranium"]
    assert len(table) == 919
    assert sorted(table["county"].unique()) == list(range(1, 86))
    assert set(table["floor"]) == {0, 1} and table["floor"].sum() == 153
    # one uranium value per county; a reading of 0 pCi/L was logged as log(0.1)
    assert (table.groupby("county")["log_uranium"].nunique() == 1).all()
    assert table["log_radon"].min() == pytest.approx(math.log(0.1), abs=1e-8)
    sizes = table["county"].value_counts()
    # Hennepin (26) and St Louis (70) are the two big counties; Mahnomen (42) and Murray (50)
    # have one house each (Gelman & Hill, section 12.2)
    assert (sizes[26], sizes[70], sizes[42], sizes[50]) == (105, 116, 1, 1)


def test_radon_least_squares_matches_gelman_hill():
    # G&H section 12.2: lm(y ~ x) prints 1.33, -0.61, residual sd 0.82; lm(y ~ x +
    # factor(county) - 1) prints x = -0.72, residual sd 0.76. Least squares on all 919 houses,
    # the county dummies taken out by demeaning within county (Frisch-Waugh-Lovell), which
    # gives the same slope and residuals as the 86-column fit without a large BLAS call.
    y, floor, county, _ = radon_arrays(zoo.load_dataset("radon"))
    b = np.cov(floor, y)[0, 1] / np.var(floor, ddof=1)
    a = y.mean() - b * floor.mean()
    residual_sd = math.sqrt(((y - a - b * floor) ** 2).sum() / (919 - 2))
    assert (a, b, residual_sd) == pytest.approx((1.33, -0.61, 0.82), abs=PRINTED)

    def within(v: np.ndarray) -> np.ndarray:
        return v - (np.bincount(county, weights=v) / np.bincount(county))[county]

    x_w, y_w = within(floor), within(y)
    b = (x_w @ y_w) / (x_w @ x_w)
    residual_sd = math.sqrt(((y_w - b * x_w) ** 2).sum() / (919 - 86))
    assert (b, residual_sd) == pytest.approx((-0.72, 0.76), abs=PRINTED)


def _reml(y: np.ndarray, X: np.ndarray, county: np.ndarray) -> tuple[np.ndarray, float, float]:
    """REML fit of y = X beta + a[county] + e, a ~ N(0, sigma_a^2), e ~ N(0, sigma_y^2), as lmer
    does; V^-1 by Woodbury, since V = sigma_y^2 I + sigma_a^2 Z Z^T with Z^T Z diagonal."""
    num = np.bincount(county)

    def v_inv(m: np.ndarray, sa2: float, sy2: float) -> np.ndarray:
        sums = np.zeros((len(num),) + m.shape[1:])
        np.add.at(sums, county, m)
        w = (sa2 / (sy2 + num * sa2))[county].reshape((-1,) + (1,) * (m.ndim - 1))
        return (m - w * sums[county]) / sy2

    def objective(log_sd: np.ndarray) -> tuple[float, np.ndarray]:
        sa2, sy2 = np.exp(2 * log_sd)
        xvx = X.T @ v_inv(X, sa2, sy2)
        beta = np.linalg.solve(xvx, X.T @ v_inv(y, sa2, sy2))
        r = y - X @ beta
        log_det = len(y) * np.log(sy2) + np.log1p(num * sa2 / sy2).sum()
        return 0.5 * (log_det + np.linalg.slogdet(xvx)[1] + r @ v_inv(r, sa2, sy2)), beta

    best = optimize.minimize(lambda p: objective(p)[0], np.log([0.3, 0.7]), method="Nelder-Mead",
                             options={"xatol": 1e-8, "fatol": 1e-12})
    sigma_a, sigma_y = np.exp(best.x)
    return objective(best.x)[1], sigma_a, sigma_y


def test_radon_multilevel_fits_match_gelman_hill_lmer():
    # G&H section 12.4: lmer(y ~ x + (1 | county)) prints 1.46, -0.69, county sd 0.33, residual
    # 0.76; section 12.6 adds u.full: 1.47, -0.67, 0.72, county sd 0.16, residual 0.76.
    y, floor, county, uranium = radon_arrays(zoo.load_dataset("radon"))
    X = np.column_stack([np.ones_like(floor), floor])
    beta, sigma_a, sigma_y = _reml(y, X, county)
    assert (*beta, sigma_a, sigma_y) == pytest.approx((1.46, -0.69, 0.33, 0.76), abs=PRINTED)
    beta, sigma_a, sigma_y = _reml(y, np.column_stack([X, uranium[county]]), county)
    assert (*beta, sigma_a, sigma_y) == pytest.approx((1.47, -0.67, 0.72, 0.16, 0.76), abs=PRINTED)


@pytest.mark.slow
def test_radon_varying_intercept_recovers_lmer_on_all_houses():
    # With 919 houses and weak priors the posterior means sit within a fraction of a posterior
    # sd of the REML estimates (sigma_a's posterior is right-skewed, so its mean is above the
    # mode: we see 0.13 sd). Criterion: |mean - REML| < 4 MCSE + 0.25 sd for mu_a, b, sigma_a,
    # sigma_y. A shuffled county index or a centered/non-centered mix-up moves sigma_a by several
    # sds. init "median": from "uniform" starts one superchain can begin at sigma_y = 0.3,
    # sigma_a = 7 and never move (every step diverges), which the checks then report.
    y, floor, county, _ = radon_arrays(zoo.load_dataset("radon"))
    beta, sigma_a, sigma_y = _reml(y, np.column_stack([np.ones_like(floor), floor]), county)
    fit = zoo.fit("radon_varying_intercept", zoo.load_dataset("radon"), method="chees", seed=0,
                  num_chains=32, init_strategy="median")
    assert fit.converged, fit.warnings
    table = fit.summary(round_to="none")
    for site, reml in {"mu_a": beta[0], "b": beta[1], "sigma_a": sigma_a,
                       "sigma_y": sigma_y}.items():
        row = table.loc[site]
        assert abs(row["mean"] - reml) < 4 * row["mcse_mean"] + 0.25 * row["sd"], (site, row)


def test_radon_subsets():
    full = load_radon_table()
    small = zoo.load_dataset("radon_small")
    assert small["num_counties"] == 12 and len(small["y"]) == 116
    assert torch.equal(small["county"].unique(), torch.arange(12.0))
    expected = full.groupby("county")["log_uranium"].first().to_numpy()[:12]
    np.testing.assert_array_equal(small["log_uranium"].numpy(), expected)
    for key in ("y", "floor", "county", "log_uranium"):
        assert torch.equal(small[key], zoo.load_dataset("radon", counties=12)[key])
    # a list keeps its order: St Louis becomes county 0, Hennepin county 1
    two = zoo.load_dataset("radon", counties=[70, 26])
    assert two["num_counties"] == 2
    assert torch.bincount(two["county"].long()).tolist() == [116, 105]
    assert two["log_uranium"].tolist() == [
        full.loc[full["county"] == c, "log_uranium"].iloc[0] for c in (70, 26)]
    stlouis = full[full["county"] == 70]["log_radon"].to_numpy()
    np.testing.assert_array_equal(two["y"][two["county"] == 0].numpy(), stlouis)


@pytest.mark.parametrize("counties", [0, 86, [1, 1], [], [3, 99], [1, 2.5], "many", True])
def test_radon_bad_counties_are_named(counties):
    with pytest.raises(ZooError, match="counties"):
        zoo.load_dataset("radon", counties=counties)


def test_radon_unknown_argument_gets_did_you_mean():
    with pytest.raises(ZooError, match="did you mean 'counties'"):
        zoo.load_dataset("radon", countie=3)


# --------------------------------------------------------------------------------------------
# The baseball data
# --------------------------------------------------------------------------------------------


def test_baseball_file_is_efron_morris():
    table = load_baseball_table()
    assert len(table) == 18 and (table["At-Bats"] == 45).all()
    data = zoo.load_dataset("baseball")
    # Efron & Morris table 1: Clemente's 18 hits down to Alvis's 7; 215 hits in 810 at-bats
    assert data["y"].tolist()[:3] == [18, 17, 16] and data["y"].tolist()[-1] == 7
    assert float(data["y"].sum()) == 215 and float(data["n"].sum()) == 810
    players = baseball_players()
    assert len(players) == 18 and players[0] == "Roberto Clemente" and players[-1] == "Max Alvis"
    heldout = baseball_heldout()
    # y / n reproduces the printed RemainingAverage (4 decimals) for every player
    np.testing.assert_allclose((heldout["y"] / heldout["n"]).numpy(), table["RemainingAverage"],
                               atol=5e-5)
    williams = players.index("Billy Williams")
    assert (heldout["y"][williams], heldout["n"][williams]) == (195, 591)


# --------------------------------------------------------------------------------------------
# Log joints written out by hand (scipy)
# --------------------------------------------------------------------------------------------

SIGMAS = {"sigma_y": 0.8, "sigma_a": 0.3}


def radon_priors(**coefs: float) -> float:
    return (sum(stats.norm.logpdf(v, 0, 10) for v in coefs.values()))


def test_radon_pooling_log_joints_by_hand():
    data = zoo.load_dataset("radon_small")
    y, floor, county, _ = radon_arrays(data)
    a, b, sigma_y = 1.3, -0.6, 0.8
    expected = (radon_priors(a=a, b=b) + stats.halfnorm.logpdf(sigma_y)
                + stats.norm.logpdf(y, a + b * floor, sigma_y).sum())
    got = log_joint("radon_complete_pooling", data, a=a, b=b, sigma_y=sigma_y)
    assert got == pytest.approx(expected, abs=1e-9)

    a = np.linspace(0.8, 1.8, 12)
    expected = (stats.norm.logpdf(a, 0, 10).sum() + radon_priors(b=b)
                + stats.halfnorm.logpdf(sigma_y)
                + stats.norm.logpdf(y, a[county] + b * floor, sigma_y).sum())
    got = log_joint("radon_no_pooling", data, a=a, b=b, sigma_y=sigma_y)
    assert got == pytest.approx(expected, abs=1e-9)


def test_radon_varying_intercept_log_joints_by_hand():
    data = zoo.load_dataset("radon_small")
    y, floor, county, uranium = radon_arrays(data)
    z_a = np.linspace(-1.5, 1.5, 12)
    b, sigma_a, sigma_y = -0.7, 0.3, 0.8
    scales = stats.halfnorm.logpdf(sigma_a) + stats.halfnorm.logpdf(sigma_y)

    mu_a = 1.4
    a = mu_a + sigma_a * z_a
    expected = (radon_priors(mu_a=mu_a, b=b) + scales + stats.norm.logpdf(z_a).sum()
                + stats.norm.logpdf(y, a[county] + b * floor, sigma_y).sum())
    values = dict(mu_a=mu_a, b=b, sigma_a=sigma_a, sigma_y=sigma_y, z_a=z_a)
    assert log_joint("radon_varying_intercept", data, **values) == pytest.approx(expected, abs=1e-9)
    np.testing.assert_allclose(trace_values("radon_varying_intercept", data, **values)["a"], a)

    g0, g1 = 1.45, 0.7
    a = g0 + g1 * uranium + sigma_a * z_a
    expected = (radon_priors(gamma_0=g0, gamma_1=g1, b=b) + scales + stats.norm.logpdf(z_a).sum()
                + stats.norm.logpdf(y, a[county] + b * floor, sigma_y).sum())
    values = dict(gamma_0=g0, gamma_1=g1, b=b, sigma_a=sigma_a, sigma_y=sigma_y, z_a=z_a)
    assert log_joint("radon_uranium", data, **values) == pytest.approx(expected, abs=1e-9)
    np.testing.assert_allclose(trace_values("radon_uranium", data, **values)["a"], a)


def test_radon_varying_slope_log_joint_by_hand():
    data = zoo.load_dataset("radon_small")
    y, floor, county, _ = radon_arrays(data)
    mu_a, mu_b, sigma_a, sigma_b, sigma_y, rho = 1.4, -0.6, 0.3, 0.2, 0.75, -0.4
    z = np.column_stack([np.linspace(-1.5, 1.5, 12), np.linspace(1.0, -2.0, 12)])
    # (a, b) = mu + diag(sigma) chol(Omega) z, with numpy's own Cholesky factor of Omega
    chol = np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))
    ab = np.array([mu_a, mu_b]) + (z @ chol.T) * np.array([sigma_a, sigma_b])
    a, b = ab[:, 0], ab[:, 1]
    # LKJ(eta = 2) on a 2x2 correlation: (rho + 1) / 2 ~ Beta(2, 2), Jacobian 1/2
    lkj = stats.beta.logpdf((rho + 1) / 2, 2, 2) - math.log(2)
    expected = (radon_priors(mu_a=mu_a, mu_b=mu_b)
                + sum(stats.halfnorm.logpdf(s) for s in (sigma_a, sigma_b, sigma_y)) + lkj
                + stats.norm.logpdf(z).sum()
                + stats.norm.logpdf(y, a[county] + b[county] * floor, sigma_y).sum())
    values = dict(mu_a=mu_a, mu_b=mu_b, sigma_a=sigma_a, sigma_b=sigma_b, sigma_y=sigma_y,
                  rho=rho, z=z)
    assert log_joint("radon_varying_slope", data, **values) == pytest.approx(expected, abs=1e-9)
    sites = trace_values("radon_varying_slope", data, **values)
    np.testing.assert_allclose(sites["a"], a)
    np.testing.assert_allclose(sites["b"], b)


@pytest.mark.parametrize("eta", [1.0, 2.0, 4.5])
def test_lkj_2x2_is_pyro_lkj_cholesky(eta):
    # The scalar-rho prior is Pyro's LKJCholesky(2, eta) at L = [[1, 0], [rho, sqrt(1 - rho^2)]].
    import pyro.distributions as dist

    for rho in (-0.95, -0.3, 0.0, 0.6, 0.99):
        chol = torch.tensor([[1.0, 0.0], [rho, math.sqrt(1 - rho**2)]])
        expected = float(dist.LKJCholesky(2, eta).log_prob(chol))
        assert float(lkj_correlation_2x2(eta).log_prob(torch.tensor(rho))) == pytest.approx(
            expected, abs=1e-10)


def test_radon_varying_slope_implies_the_stated_covariance():
    # 20000 counties simulated at fixed (mu, sigma, rho): the sample correlation of (a, b) must
    # be within 4 standard errors ((1 - rho^2) / sqrt(J)) of rho, each sd within 4 sd / sqrt(2J).
    import pyro

    num, rho, sigma_a, sigma_b = 20000, 0.6, 0.5, 2.0
    fixed = {"mu_a": 1.0, "mu_b": -1.0, "sigma_a": sigma_a, "sigma_b": sigma_b, "rho": rho}
    pyro.set_rng_seed(0)
    sites = trace_values("radon_varying_slope",
                         {"floor": [0.0], "county": [0.0], "num_counties": num}, **fixed)
    a, b = sites["a"], sites["b"]
    assert np.corrcoef(a, b)[0, 1] == pytest.approx(rho, abs=4 * (1 - rho**2) / math.sqrt(num))
    assert a.std() == pytest.approx(sigma_a, abs=4 * sigma_a / math.sqrt(2 * num))
    assert b.std() == pytest.approx(sigma_b, abs=4 * sigma_b / math.sqrt(2 * num))


def test_baseball_log_joints_by_hand():
    data = zoo.load_dataset("baseball")
    n, y = data["n"].numpy(), data["y"].numpy()
    phi = 0.27
    expected = stats.beta.logpdf(phi, 1, 1) + stats.binom.logpmf(y, n, phi).sum()
    assert log_joint("baseball_complete_pooling", data, phi=phi) == pytest.approx(expected,
                                                                                   abs=1e-9)
    theta = np.linspace(0.15, 0.4, 18)
    expected = (stats.beta.logpdf(theta, 1, 1) + stats.binom.logpmf(y, n, theta)).sum()
    assert log_joint("baseball_no_pooling", data, theta=theta) == pytest.approx(expected,
                                                                                abs=1e-9)
    mu, sigma, alpha_std = -1.1, 0.3, np.linspace(-2.0, 2.0, 18)
    chance = special.expit(mu + sigma * alpha_std)
    expected = (stats.norm.logpdf(mu, -1, 1) + stats.halfnorm.logpdf(sigma)
                + stats.norm.logpdf(alpha_std).sum() + stats.binom.logpmf(y, n, chance).sum())
    values = dict(mu=mu, sigma=sigma, alpha_std=alpha_std)
    assert log_joint("baseball_partial_pooling", data, **values) == pytest.approx(expected,
                                                                                  abs=1e-9)
    np.testing.assert_allclose(trace_values("baseball_partial_pooling", data, **values)["theta"],
                               chance)


@pytest.mark.parametrize("name,site,points", [
    ("baseball_complete_pooling", "phi", [0.265, 0.35]),
    ("baseball_no_pooling", "theta", [np.full(18, 0.25), np.linspace(0.1, 0.5, 18)]),
])
def test_baseball_exact_forms_by_bayes_rule(name, site, points):
    # log p(y) = log p(y, theta) - log p(theta | y) at any theta: two quite different ones
    spec = zoo.get_model(name)
    data = zoo.load_dataset("baseball")
    log_evidence = spec.exact_log_evidence(**data)
    posterior = spec.exact_posterior(**data)[site]
    for theta in points:
        theta = torch.as_tensor(theta, dtype=torch.float64)
        joint = log_joint(name, data, **{site: theta})
        assert joint - float(posterior.log_prob(theta).sum()) == pytest.approx(log_evidence,
                                                                               abs=1e-9)


# --------------------------------------------------------------------------------------------
# Partial pooling, fitted
# --------------------------------------------------------------------------------------------


def _estimates(fit) -> np.ndarray:
    return fit.posterior["theta"].reshape(-1, 18).mean(0)


def _pooling_references() -> tuple[np.ndarray, float]:
    """No-pooling and complete-pooling posterior means, exact (Beta posteriors)."""
    data = zoo.load_dataset("baseball")
    alone = zoo.get_model("baseball_no_pooling").exact_posterior(**data)["theta"].mean.numpy()
    pooled = float(zoo.get_model("baseball_complete_pooling").exact_posterior(**data)["phi"].mean)
    return alone, pooled


def test_partial_pooling_shrinks_toward_the_pooled_mean():
    # Criterion: every player's partial-pooling posterior mean is closer to the pooled mean
    # than his no-pooling estimate is, and the spread across players is under half the
    # no-pooling spread (Efron & Morris's James-Stein factor is 0.21; without pooling the ratio
    # is 1). Not "between the two": the model shrinks towards its population centre
    # logistic(mu), a little below the pooled mean, so a player just above it (Alvarado, .277)
    # may end just below. The smallest margin (~0.004, the 11-hit players) is ~3x the Monte
    # Carlo error of a posterior mean from these 800 draws.
    fit = zoo.fit("baseball_partial_pooling", zoo.load_dataset("baseball"), method="chees",
                  seed=0, num_chains=16, num_warmup=100, num_samples=50)
    partial = _estimates(fit)
    alone, pooled = _pooling_references()
    assert (np.abs(partial - pooled) < np.abs(alone - pooled)).all(), (partial, alone, pooled)
    assert partial.std() < 0.5 * alone.std()


@pytest.mark.slow
def test_partial_pooling_predicts_the_rest_of_the_season_better():
    # Efron & Morris's result: shrunken estimates predict the rest-of-season batting averages
    # with about a third of the squared error of the players' own averages (0.022 vs 0.077 in
    # their table). Criterion: the partial-pooling posterior means' total squared error against
    # the held-out averages is under half that of the no-pooling posterior means and of the
    # raw averages y / 45, and the held-out hits get a log predictive density higher by more
    # than 5 nats (we see -72.0 against -82.1; its Monte Carlo error is ~0.1).
    data = zoo.load_dataset("baseball")
    heldout = baseball_heldout()
    average = (heldout["y"] / heldout["n"]).numpy()
    fit = zoo.fit("baseball_partial_pooling", data, method="chees", seed=1, num_chains=64,
                  num_warmup=300, num_samples=100)
    assert fit.converged, fit.warnings
    partial = _estimates(fit)
    alone, _ = _pooling_references()
    raw = (data["y"] / data["n"]).numpy()
    error = {k: ((v - average) ** 2).sum() for k, v in
             {"partial": partial, "alone": alone, "raw": raw}.items()}
    assert error["partial"] < 0.5 * min(error["alone"], error["raw"]), error

    # log p(held-out hits | first 45) = sum_i log mean_s Binomial(y_i | n_i, theta_s,i); the
    # no-pooling posterior is exact, so its density is the Beta-binomial in closed form.
    n, y = heldout["n"].numpy(), heldout["y"].numpy()
    draws = fit.posterior["theta"].reshape(-1, 18)
    lpd_partial = (special.logsumexp(stats.binom.logpmf(y, n, draws), axis=0)
                   - math.log(len(draws))).sum()
    post = zoo.get_model("baseball_no_pooling").exact_posterior(**data)["theta"]
    a, b = post.concentration1.numpy(), post.concentration0.numpy()
    lpd_alone = stats.betabinom.logpmf(y, n, a, b).sum()
    assert lpd_partial > lpd_alone + 5, (lpd_partial, lpd_alone)
