"""Hierarchical models: the eight schools, centered and non-centered, and the two pooling extremes.

Priors follow posteriordb's ``eight_schools_noncentered`` exactly, and site names follow its
parameter names (``mu``, ``tau``, ``theta``, ``theta_trans``), so draws compare directly with
the reference posterior (``zoo.datasets.posteriordb_reference``). The two parameterisations
define the same posterior over (mu, tau, theta); the centered one has the funnel that makes
NUTS diverge, which is why both are here.

On real data: the Minnesota radon family (``radon_*``: complete and no pooling, varying
intercepts with and without county uranium, correlated varying slopes; Gelman & Hill 2007) and
Efron & Morris's baseball (``baseball_*``: complete, no and partial pooling of hit rates). Their
data ship with the zoo (``zoo.datasets.multilevel``).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from ..errors import ZooError
from ..registry import register_model

REFERENCES = (
    "Rubin (1981), Estimation in parallel randomized experiments, J. Educ. Stat. 6(4)",
    "Gelman, Carlin, Stern, Dunson, Vehtari & Rubin (2013), Bayesian Data Analysis, "
    "3rd ed., section 5.5",
    "Betancourt & Girolami (2015), Hamiltonian Monte Carlo for hierarchical models",
    "posteriordb: eight_schools-eight_schools_noncentered (Magnusson et al.)",
)


def _schools(J: int | None, sigma: Tensor) -> int:
    return int(J) if J is not None else sigma.shape[-1]


@register_model(
    # No Laplace: the centered joint density has no mode. As tau -> 0 with every theta[j] -> mu
    # the J Normal(theta | mu, tau) terms grow like tau^-J (tau^-(J-1) with the log-tau
    # Jacobian), so MAP optimisation runs down the funnel to NaN. The non-centered form has a mode.
    methods=("chees", "nuts", "svi"),
    observed=("y",),
    data_shapes={"y": ("J",), "sigma": ("J",)},
    default_dataset="eight_schools",
    references=REFERENCES,
)
def eight_schools_centered(sigma: Tensor, y: Tensor | None = None, J: int | None = None):
    """Eight schools, centered: school effects drawn directly around the population mean.

    mu ~ Normal(0, 5)
    tau ~ HalfCauchy(5)
    theta[j] ~ Normal(mu, tau),  j = 1..J
    y[j] ~ Normal(theta[j], sigma[j])  (sigma[j] known standard errors)
    """
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", _schools(J, sigma), dim=-1):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)


@register_model(
    observed=("y",),
    data_shapes={"y": ("J",), "sigma": ("J",)},
    default_dataset="eight_schools",
    posteriordb=("eight_schools-eight_schools_noncentered",),
    references=REFERENCES,
)
def eight_schools_noncentered(sigma: Tensor, y: Tensor | None = None, J: int | None = None):
    """Eight schools, non-centered: standardised school effects, shifted and scaled.

    mu ~ Normal(0, 5)
    tau ~ HalfCauchy(5)
    theta_trans[j] ~ Normal(0, 1),  j = 1..J
    theta[j] = mu + tau * theta_trans[j]  (deterministic)
    y[j] ~ Normal(theta[j], sigma[j])  (sigma[j] known standard errors)
    """
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("schools", _schools(J, sigma), dim=-1):
        theta_trans = pyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_trans)
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)


# -- the two extremes of pooling: Gaussian, so the evidence and posterior are closed forms ----
PRIOR_SCALE = 5.0  # the same Normal(0, 5) as mu above, so the three models compare fairly


def _gaussian_parts(sigma: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]:
    if y is None:
        raise ZooError("eight schools: the exact posterior and evidence need the observed 'y'")
    dtype = torch.get_default_dtype()
    return torch.as_tensor(y, dtype=dtype), torch.as_tensor(sigma, dtype=dtype)


def complete_pooling_exact_posterior(sigma: Tensor, y: Tensor | None = None,
                                     J: int | None = None) -> dict[str, dist.Distribution]:
    """mu | y ~ Normal: prior and school precisions add."""
    y, sigma = _gaussian_parts(sigma, y)
    precision = PRIOR_SCALE**-2 + (sigma**-2).sum()
    return {"mu": dist.Normal((y / sigma**2).sum() / precision, precision.rsqrt())}


def complete_pooling_exact_log_evidence(sigma: Tensor, y: Tensor | None = None,
                                        J: int | None = None) -> float:
    """y ~ MVN(0, diag(sigma²) + 25 11ᵀ): mu is shared, so the schools are correlated."""
    y, sigma = _gaussian_parts(sigma, y)
    cov = torch.diag(sigma**2) + PRIOR_SCALE**2
    return float(dist.MultivariateNormal(torch.zeros_like(y), covariance_matrix=cov).log_prob(y))


def no_pooling_exact_posterior(sigma: Tensor, y: Tensor | None = None,
                               J: int | None = None) -> dict[str, dist.Distribution]:
    """theta[j] | y ~ Normal, independently per school."""
    y, sigma = _gaussian_parts(sigma, y)
    precision = PRIOR_SCALE**-2 + sigma**-2
    return {"theta": dist.Normal(y / sigma**2 / precision, precision.rsqrt())}


def no_pooling_exact_log_evidence(sigma: Tensor, y: Tensor | None = None,
                                  J: int | None = None) -> float:
    """Σ_j log N(y[j]; 0, sqrt(sigma[j]² + 25)): independent schools."""
    y, sigma = _gaussian_parts(sigma, y)
    return float(dist.Normal(0.0, (sigma**2 + PRIOR_SCALE**2).sqrt()).log_prob(y).sum())


@register_model(
    observed=("y",),
    data_shapes={"y": ("J",), "sigma": ("J",)},
    default_dataset="eight_schools",
    references=REFERENCES,
    exact_posterior=complete_pooling_exact_posterior,
    exact_log_evidence=complete_pooling_exact_log_evidence,
)
def eight_schools_complete_pooling(sigma: Tensor, y: Tensor | None = None, J: int | None = None):
    """Eight schools, complete pooling: one effect shared by every school (tau = 0).

    mu ~ Normal(0, 5)
    y[j] ~ Normal(mu, sigma[j])
    """
    mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    with pyro.plate("schools", _schools(J, sigma), dim=-1):
        return pyro.sample("y", dist.Normal(mu, sigma), obs=y)


@register_model(
    observed=("y",),
    data_shapes={"y": ("J",), "sigma": ("J",)},
    default_dataset="eight_schools",
    references=REFERENCES,
    exact_posterior=no_pooling_exact_posterior,
    exact_log_evidence=no_pooling_exact_log_evidence,
)
def eight_schools_no_pooling(sigma: Tensor, y: Tensor | None = None, J: int | None = None):
    """Eight schools, no pooling: independent school effects (tau = ∞, with a Normal(0, 5) prior).

    theta[j] ~ Normal(0, 5)
    y[j] ~ Normal(theta[j], sigma[j])
    """
    with pyro.plate("schools", _schools(J, sigma), dim=-1):
        theta = pyro.sample("theta", dist.Normal(0.0, PRIOR_SCALE))
        return pyro.sample("y", dist.Normal(theta, sigma), obs=y)


# -- varying intercepts and slopes: the radon model's shape, non-centered ---------------------


@register_model(
    observed=("y",),
    data_shapes={"x": ("N",), "group": ("N",), "y": ("N",)},
    default_dataset="radon_synthetic",
    references=(
        "Gelman & Hill (2007), Data Analysis Using Regression and Multilevel/Hierarchical "
        "Models, chapters 12-13 (the Minnesota radon example)",
        "Betancourt & Girolami (2015), Hamiltonian Monte Carlo for hierarchical models",
    ),
)
def hierarchical_linear(x: Tensor, group: Tensor, y: Tensor | None = None,
                        num_groups: int | None = None):
    """Varying intercepts and slopes by group (radon-style), non-centered.

    mu_a, mu_b ~ Normal(0, 10);  sigma_a, sigma_b, sigma_y ~ HalfNormal(1)
    z_a[j], z_b[j] ~ Normal(0, 1),  j = 1..J
    a[j] = mu_a + sigma_a z_a[j];  b[j] = mu_b + sigma_b z_b[j]  (deterministic)
    y[i] ~ Normal(a[g_i] + b[g_i] x[i], sigma_y),  i = 1..N  (g_i = group[i] in 0..J-1)
    """
    group = group.long()
    num_groups = int(num_groups) if num_groups is not None else int(group.max()) + 1
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, 10.0))
    mu_b = pyro.sample("mu_b", dist.Normal(0.0, 10.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(1.0))
    sigma_b = pyro.sample("sigma_b", dist.HalfNormal(1.0))
    sigma_y = pyro.sample("sigma_y", dist.HalfNormal(1.0))
    with pyro.plate("groups", num_groups, dim=-1):
        z_a = pyro.sample("z_a", dist.Normal(0.0, 1.0))
        z_b = pyro.sample("z_b", dist.Normal(0.0, 1.0))
        a = pyro.deterministic("a", mu_a + sigma_a * z_a)
        b = pyro.deterministic("b", mu_b + sigma_b * z_b)
    with pyro.plate("data", x.shape[-1], dim=-1):
        mean = a[..., group] + b[..., group] * x
        return pyro.sample("y", dist.Normal(mean, sigma_y), obs=y)


# -- Minnesota radon (Gelman & Hill 2007, ch. 12-13): from no pooling to correlated slopes -----
# Every radon model takes the keys of the `radon` data set (floor, county, log_uranium, y,
# num_counties) and uses those it needs, so one data set fits them all. Priors are weakly
# informative on the scale of log radon (sd 0.85): coefficients Normal(0, 10), scales
# HalfNormal(1), as in hierarchical_linear.
# Laplace runs on the non-centered models (the joint density has a mode with a positive-definite
# Hessian) but answers badly for the group scale: at the joint mode the standardised effects z
# shrink and sigma_a grows to take their place (sigma_a = 2.3 at the mode on all of radon, where
# lmer gives 0.33; 1.5 for baseball's sigma). Use MCMC or SVI for the scales.

GELMAN_HILL = (
    "Gelman & Hill (2007), Data Analysis Using Regression and Multilevel/Hierarchical Models, "
    "chapters 12-13 (the Minnesota radon example)"
)
PRICE_NERO_GELMAN = (
    "Price, Nero & Gelman (1996), Bayesian prediction of mean indoor radon concentrations for "
    "Minnesota counties, Health Physics 71(6)"
)
RADON_SHAPES = {"floor": ("N",), "county": ("N",), "y": ("N",),
                "log_uranium": ("num_counties",)}
COEF_SCALE = 10.0  # Normal(0, 10) on intercepts and slopes
SCALE_PRIOR = 1.0  # HalfNormal(1) on every standard deviation
LKJ_CONCENTRATION = 2.0  # LKJ(2): mildly favours small correlations, as in the Stan manual


def _num_counties(county: Tensor, num_counties: int | None) -> int:
    return int(num_counties) if num_counties is not None else int(county.max()) + 1


def _radon_likelihood(mean: Tensor, sigma_y: Tensor, y: Tensor | None, num_houses: int) -> Tensor:
    with pyro.plate("houses", num_houses, dim=-1):
        return pyro.sample("y", dist.Normal(mean, sigma_y), obs=y)


def _varying_intercepts(center: Tensor, num_counties: int) -> Tensor:
    """a[j] = center[j] + sigma_a z_a[j], z_a[j] ~ Normal(0, 1): non-centered."""
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(SCALE_PRIOR))
    with pyro.plate("counties", num_counties, dim=-1):
        z_a = pyro.sample("z_a", dist.Normal(0.0, 1.0))
        return pyro.deterministic("a", center + sigma_a * z_a)


@register_model(observed=("y",), data_shapes=RADON_SHAPES, default_dataset="radon_small",
                references=(GELMAN_HILL + ", section 12.2", PRICE_NERO_GELMAN))
def radon_complete_pooling(floor: Tensor, county: Tensor | None = None,
                           log_uranium: Tensor | None = None, y: Tensor | None = None,
                           num_counties: int | None = None):
    """Radon, complete pooling: one regression line for every county (county is ignored).

    a, b ~ Normal(0, 10);  sigma_y ~ HalfNormal(1)
    y[i] ~ Normal(a + b floor[i], sigma_y),  i = 1..N  (y = log radon; floor 0 basement, 1 first)
    Least squares on all 919 houses gives a = 1.33, b = -0.61, sigma_y = 0.82 (G&H p. 255).
    """
    a = pyro.sample("a", dist.Normal(0.0, COEF_SCALE))
    b = pyro.sample("b", dist.Normal(0.0, COEF_SCALE))
    sigma_y = pyro.sample("sigma_y", dist.HalfNormal(SCALE_PRIOR))
    return _radon_likelihood(a + b * floor, sigma_y, y, floor.shape[-1])


@register_model(observed=("y",), data_shapes=RADON_SHAPES, default_dataset="radon_small",
                references=(GELMAN_HILL + ", section 12.2", PRICE_NERO_GELMAN))
def radon_no_pooling(floor: Tensor, county: Tensor, log_uranium: Tensor | None = None,
                     y: Tensor | None = None, num_counties: int | None = None):
    """Radon, no pooling: an independent intercept per county, one common floor effect.

    a[j] ~ Normal(0, 10),  j = 1..J;  b ~ Normal(0, 10);  sigma_y ~ HalfNormal(1)
    y[i] ~ Normal(a[county[i]] + b floor[i], sigma_y)
    Least squares on all 919 houses (85 county dummies) gives b = -0.72, sigma_y = 0.76.
    """
    county = county.long()
    b = pyro.sample("b", dist.Normal(0.0, COEF_SCALE))
    sigma_y = pyro.sample("sigma_y", dist.HalfNormal(SCALE_PRIOR))
    with pyro.plate("counties", _num_counties(county, num_counties), dim=-1):
        a = pyro.sample("a", dist.Normal(0.0, COEF_SCALE))
    return _radon_likelihood(a[..., county] + b * floor, sigma_y, y, floor.shape[-1])


@register_model(observed=("y",), data_shapes=RADON_SHAPES, default_dataset="radon_small",
                references=(GELMAN_HILL + ", sections 12.3-12.5", PRICE_NERO_GELMAN,
                            "Betancourt & Girolami (2015), Hamiltonian Monte Carlo for "
                            "hierarchical models"))
def radon_varying_intercept(floor: Tensor, county: Tensor, log_uranium: Tensor | None = None,
                            y: Tensor | None = None, num_counties: int | None = None):
    """Radon, partial pooling: county intercepts drawn around a state mean, non-centered.

    mu_a, b ~ Normal(0, 10);  sigma_a, sigma_y ~ HalfNormal(1)
    z_a[j] ~ Normal(0, 1);  a[j] = mu_a + sigma_a z_a[j]  (deterministic),  j = 1..J
    y[i] ~ Normal(a[county[i]] + b floor[i], sigma_y)
    lmer on all 919 houses gives mu_a = 1.46, b = -0.69, sigma_a = 0.33, sigma_y = 0.76 (G&H 12.4).
    Laplace overstates sigma_a (the joint mode is not the posterior's centre; see above).
    """
    county = county.long()
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, COEF_SCALE))
    b = pyro.sample("b", dist.Normal(0.0, COEF_SCALE))
    sigma_y = pyro.sample("sigma_y", dist.HalfNormal(SCALE_PRIOR))
    a = _varying_intercepts(mu_a, _num_counties(county, num_counties))
    return _radon_likelihood(a[..., county] + b * floor, sigma_y, y, floor.shape[-1])


@register_model(observed=("y",), data_shapes=RADON_SHAPES, default_dataset="radon_small",
                references=(GELMAN_HILL + ", section 12.6", PRICE_NERO_GELMAN))
def radon_uranium(floor: Tensor, county: Tensor, log_uranium: Tensor, y: Tensor | None = None,
                  num_counties: int | None = None):
    """Radon, varying intercepts with county log uranium as a group-level predictor.

    gamma_0, gamma_1, b ~ Normal(0, 10);  sigma_a, sigma_y ~ HalfNormal(1)
    z_a[j] ~ Normal(0, 1);  a[j] = gamma_0 + gamma_1 log_uranium[j] + sigma_a z_a[j]
    y[i] ~ Normal(a[county[i]] + b floor[i], sigma_y)
    lmer on all 919 houses gives gamma_0 = 1.47, gamma_1 = 0.72, b = -0.67, sigma_a = 0.16
    (G&H 12.6). Laplace overstates sigma_a (see above).
    """
    county = county.long()
    gamma_0 = pyro.sample("gamma_0", dist.Normal(0.0, COEF_SCALE))
    gamma_1 = pyro.sample("gamma_1", dist.Normal(0.0, COEF_SCALE))
    b = pyro.sample("b", dist.Normal(0.0, COEF_SCALE))
    sigma_y = pyro.sample("sigma_y", dist.HalfNormal(SCALE_PRIOR))
    num = _num_counties(county, num_counties)
    a = _varying_intercepts(gamma_0 + gamma_1 * log_uranium, num)
    return _radon_likelihood(a[..., county] + b * floor, sigma_y, y, floor.shape[-1])


def lkj_correlation_2x2(concentration: float) -> dist.Distribution:
    """The LKJ(concentration) prior on the one correlation rho of a 2x2 correlation matrix.

    LKJ puts density proportional to det(Omega)^(eta - 1) = (1 - rho^2)^(eta - 1) on Omega,
    which is (rho + 1) / 2 ~ Beta(eta, eta): the same density as Pyro's LKJCholesky(2, eta) at
    L = [[1, 0], [rho, sqrt(1 - rho^2)]] (L[1, 0] = rho, so no Jacobian), but on a scalar site
    whose unconstrained space has the site's own shape, which every zoo method handles.
    """
    eta = float(concentration)
    return dist.AffineBeta(eta, eta, -1.0, 2.0)  # Beta(eta, eta) on (-1, 1): rho = 2 u - 1


@register_model(observed=("y",), data_shapes=RADON_SHAPES, default_dataset="radon_small",
                references=(GELMAN_HILL + ", section 13.1", PRICE_NERO_GELMAN,
                            "Lewandowski, Kurowicka & Joe (2009), Generating random correlation "
                            "matrices based on vines and extended onion method, "
                            "J. Multivar. Anal. 100(9)"))
def radon_varying_slope(floor: Tensor, county: Tensor, log_uranium: Tensor | None = None,
                        y: Tensor | None = None, num_counties: int | None = None):
    """Radon, correlated varying intercepts and slopes by county (LKJ prior, non-centered).

    mu_a, mu_b ~ Normal(0, 10);  sigma_a, sigma_b, sigma_y ~ HalfNormal(1)
    rho ~ LKJ(2): Omega = [[1, rho], [rho, 1]], density (1 - rho^2) i.e. (rho + 1)/2 ~ Beta(2, 2)
    L = [[1, 0], [rho, sqrt(1 - rho^2)]]  (Cholesky factor of Omega)
    z[j] ~ Normal(0, I_2);  (a[j], b[j]) = (mu_a, mu_b) + diag(sigma_a, sigma_b) L z[j]
    so (a[j], b[j]) ~ MVN((mu_a, mu_b), diag(sigma) Omega diag(sigma)),  j = 1..J
    y[i] ~ Normal(a[county[i]] + b[county[i]] floor[i], sigma_y)
    For 2x2 the LKJ prior is this scalar one (exactly Pyro's LKJCholesky(2, 2) density at L).
    Laplace overstates sigma_a and sigma_b (see above).
    """
    county = county.long()
    mu_a = pyro.sample("mu_a", dist.Normal(0.0, COEF_SCALE))
    mu_b = pyro.sample("mu_b", dist.Normal(0.0, COEF_SCALE))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(SCALE_PRIOR))
    sigma_b = pyro.sample("sigma_b", dist.HalfNormal(SCALE_PRIOR))
    sigma_y = pyro.sample("sigma_y", dist.HalfNormal(SCALE_PRIOR))
    rho = pyro.sample("rho", lkj_correlation_2x2(LKJ_CONCENTRATION))
    with pyro.plate("counties", _num_counties(county, num_counties), dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        # L z written out: rows (1, 0) and (rho, sqrt(1 - rho^2)); rho (S, 1) meets z (S, J, 2)
        a = pyro.deterministic("a", mu_a + sigma_a * z[..., 0])
        b = pyro.deterministic(
            "b", mu_b + sigma_b * (rho * z[..., 0] + (1 - rho**2).sqrt() * z[..., 1]))
    return _radon_likelihood(a[..., county] + b[..., county] * floor, sigma_y, y,
                             floor.shape[-1])


# -- Efron & Morris (1975) baseball: hits in 45 at-bats, three degrees of pooling -------------
# The keys are beta_binomial's (n trials, y successes), so each model also fits any binomial
# data set. Complete and no pooling put a uniform prior on the chance of a hit, as in Pyro's and
# Stan's baseball examples, and are conjugate: their posteriors and evidence are closed forms.

EFRON_MORRIS = (
    "Efron & Morris (1975), Data analysis using Stein's estimator and its generalizations, "
    "J. Amer. Statist. Assoc. 70(350)"
)
CARPENTER = ("Carpenter (2016), Hierarchical partial pooling for repeated binary trials, Stan "
             "case study (the models and priors here)")
BASEBALL_SHAPES = {"n": ("G",), "y": ("G",)}


def _binomial_parts(n: Tensor, y: Tensor | None, model: str) -> tuple[Tensor, Tensor]:
    if y is None:
        raise ZooError(f"{model}: the exact posterior and evidence need the observed hits 'y'")
    dtype = torch.get_default_dtype()
    return torch.as_tensor(n, dtype=dtype), torch.as_tensor(y, dtype=dtype)


def _log_choose(n: Tensor, y: Tensor) -> Tensor:
    return torch.lgamma(n + 1) - torch.lgamma(y + 1) - torch.lgamma(n - y + 1)


def _log_beta(a: Tensor, b: Tensor) -> Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


def complete_pooling_binomial_exact_posterior(n: Tensor, y: Tensor | None = None
                                              ) -> dict[str, dist.Distribution]:
    """phi | y ~ Beta(1 + sum y, 1 + sum (n - y))."""
    n, y = _binomial_parts(n, y, "baseball_complete_pooling")
    return {"phi": dist.Beta(1 + y.sum(), 1 + (n - y).sum())}


def complete_pooling_binomial_exact_log_evidence(n: Tensor, y: Tensor | None = None) -> float:
    """log p(y) = sum log C(n, y) + log B(1 + sum y, 1 + sum(n - y)) - log B(1, 1), B(1, 1) = 1."""
    n, y = _binomial_parts(n, y, "baseball_complete_pooling")
    return float(_log_choose(n, y).sum() + _log_beta(1 + y.sum(), 1 + (n - y).sum()))


def no_pooling_binomial_exact_posterior(n: Tensor, y: Tensor | None = None
                                        ) -> dict[str, dist.Distribution]:
    """theta[i] | y ~ Beta(1 + y[i], 1 + n[i] - y[i]), independently."""
    n, y = _binomial_parts(n, y, "baseball_no_pooling")
    return {"theta": dist.Beta(1 + y, 1 + n - y)}


def no_pooling_binomial_exact_log_evidence(n: Tensor, y: Tensor | None = None) -> float:
    """log p(y) = sum_i [log C(n[i], y[i]) + log B(1 + y[i], 1 + n[i] - y[i])]."""
    n, y = _binomial_parts(n, y, "baseball_no_pooling")
    return float((_log_choose(n, y) + _log_beta(1 + y, 1 + n - y)).sum())


@register_model(observed=("y",), data_shapes=BASEBALL_SHAPES, default_dataset="baseball",
                references=(EFRON_MORRIS, CARPENTER),
                exact_posterior=complete_pooling_binomial_exact_posterior,
                exact_log_evidence=complete_pooling_binomial_exact_log_evidence)
def baseball_complete_pooling(n: Tensor, y: Tensor | None = None):
    """Baseball, complete pooling: every player has the same chance of a hit.

    phi ~ Beta(1, 1)  (uniform)
    y[i] ~ Binomial(n[i], phi),  i = 1..G  (y hits in n at-bats)
    Exact: phi | y ~ Beta(1 + sum y, 1 + sum(n - y)).
    """
    phi = pyro.sample("phi", dist.Beta(1.0, 1.0))
    with pyro.plate("players", n.shape[-1], dim=-1):
        return pyro.sample("y", dist.Binomial(total_count=n, probs=phi), obs=y)


@register_model(observed=("y",), data_shapes=BASEBALL_SHAPES, default_dataset="baseball",
                references=(EFRON_MORRIS, CARPENTER),
                exact_posterior=no_pooling_binomial_exact_posterior,
                exact_log_evidence=no_pooling_binomial_exact_log_evidence)
def baseball_no_pooling(n: Tensor, y: Tensor | None = None):
    """Baseball, no pooling: each player's chance of a hit on its own.

    theta[i] ~ Beta(1, 1)  (uniform),  i = 1..G
    y[i] ~ Binomial(n[i], theta[i])
    Exact: theta[i] | y ~ Beta(1 + y[i], 1 + n[i] - y[i]).
    """
    with pyro.plate("players", n.shape[-1], dim=-1):
        theta = pyro.sample("theta", dist.Beta(1.0, 1.0))
        return pyro.sample("y", dist.Binomial(total_count=n, probs=theta), obs=y)


@register_model(observed=("y",), data_shapes=BASEBALL_SHAPES, default_dataset="baseball",
                references=(EFRON_MORRIS, CARPENTER))
def baseball_partial_pooling(n: Tensor, y: Tensor | None = None):
    """Baseball, partial pooling: logit-normal chances of a hit, non-centered.

    mu ~ Normal(-1, 1);  sigma ~ HalfNormal(1)  (log-odds: logit(0.27) = -1)
    alpha_std[i] ~ Normal(0, 1);  alpha[i] = mu + sigma alpha_std[i];  theta[i] = logistic(alpha[i])
    y[i] ~ Binomial(n[i], theta[i]),  i = 1..G
    Laplace overstates sigma (1.5 at the joint mode, 0.17 a posteriori; see the radon note).
    """
    mu = pyro.sample("mu", dist.Normal(-1.0, 1.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    with pyro.plate("players", n.shape[-1], dim=-1):
        alpha_std = pyro.sample("alpha_std", dist.Normal(0.0, 1.0))
        alpha = pyro.deterministic("alpha", mu + sigma * alpha_std)
        pyro.deterministic("theta", torch.sigmoid(alpha))
        return pyro.sample("y", dist.Binomial(total_count=n, logits=alpha), obs=y)
