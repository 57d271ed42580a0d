"""Hierarchical models: the eight schools, centered and non-centered.

Priors follow posteriordb's ``eight_schools_noncentered`` exactly, and site names follow its
parameter names (``mu``, ``tau``, ``theta``, ``theta_trans``), so draws compare directly with
the reference posterior (``zoo.datasets.posteriordb_reference``). The two parameterisations
define the same posterior over (mu, tau, theta); the centered one has the funnel that makes
NUTS diverge, which is why both are here.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
from torch import Tensor

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
