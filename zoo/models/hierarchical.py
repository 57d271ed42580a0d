"""Hierarchical models: the eight schools, centered and non-centered, and the two pooling extremes.

Priors follow posteriordb's ``eight_schools_noncentered`` exactly, and site names follow its
parameter names (``mu``, ``tau``, ``theta``, ``theta_trans``), so draws compare directly with
the reference posterior (``zoo.datasets.posteriordb_reference``). The two parameterisations
define the same posterior over (mu, tau, theta); the centered one has the funnel that makes
NUTS diverge, which is why both are here.
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
