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
    methods=("nuts", "svi"),
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
