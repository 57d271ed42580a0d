"""Conjugate models and the closed forms the zoo uses as ground truth.

Every closed form lives here: the Beta-Binomial and Normal-Normal models, and the
normal-inverse-gamma (NIG) linear-regression algebra (``nig_posterior``, ``nig_log_evidence``,
``nig_marginals``) shared by ``linear_regression`` and the ``polynomial_d*`` family in
``zoo.models.regression``. Each exact function takes the model's own keyword arguments, with
the same defaults, so ``spec.exact_posterior(**data)`` sees what ``spec.fn(**data)`` sees.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from ..errors import ZooError
from ..registry import register_model

BDA3 = (
    "Gelman, Carlin, Stern, Dunson, Vehtari & Rubin (2013), Bayesian Data Analysis, 3rd ed., "
    "chapter 2"
)
PRML = "Bishop (2006), Pattern Recognition and Machine Learning, sections 2.3.6 and 3.3"
MURPHY_NIG = "Murphy (2007), Conjugate Bayesian analysis of the Gaussian distribution, section 9"


def _float(value) -> Tensor:
    # Hyperparameters arrive as Python floats (or ints from a recipe); the zoo's dtype is the
    # default one, so build them there rather than as int64 tensors.
    return torch.as_tensor(value, dtype=torch.get_default_dtype())


def _log_beta(a: Tensor, b: Tensor) -> Tensor:
    return torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)


# --------------------------------------------------------------------------------------------
# Beta-Binomial
# --------------------------------------------------------------------------------------------


def _beta_binomial_counts(n, y, prior_a, prior_b) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if y is None:
        raise ZooError("beta_binomial: the exact posterior needs the observed counts 'y'")
    n, y = torch.atleast_1d(_float(n)), torch.atleast_1d(_float(y))
    a_n = _float(prior_a) + y.sum()
    b_n = _float(prior_b) + (n - y).sum()
    return n, y, a_n, b_n


def beta_binomial_exact_posterior(
    n: Tensor, y: Tensor | None = None, prior_a: float = 1.0, prior_b: float = 1.0
) -> dict[str, dist.Distribution]:
    """p | y ~ Beta(a + sum y, b + sum(n - y))."""
    _, _, a_n, b_n = _beta_binomial_counts(n, y, prior_a, prior_b)
    return {"p": dist.Beta(a_n, b_n)}


def beta_binomial_exact_log_evidence(
    n: Tensor, y: Tensor | None = None, prior_a: float = 1.0, prior_b: float = 1.0
) -> float:
    """log p(y) = sum log C(n, y) + log B(a_n, b_n) - log B(a, b)."""
    n, y, a_n, b_n = _beta_binomial_counts(n, y, prior_a, prior_b)
    log_choose = torch.lgamma(n + 1) - torch.lgamma(y + 1) - torch.lgamma(n - y + 1)
    log_evidence = (
        log_choose.sum() + _log_beta(a_n, b_n) - _log_beta(_float(prior_a), _float(prior_b))
    )
    return float(log_evidence)


def beta_binomial_guide(n: Tensor, y: Tensor | None = None, prior_a: float = 1.0,
                        prior_b: float = 1.0):
    """The model's own guide: q(p) = Beta(a_q, b_q), the conjugate family, so SVI with it can
    reach the exact posterior (a_q, b_q are kept positive by Pyro's constraint transform)."""
    a_q = pyro.param("a_q", lambda: torch.as_tensor(_float(prior_a)).clone(), constraint=dist.constraints.positive)
    b_q = pyro.param("b_q", lambda: torch.as_tensor(_float(prior_b)).clone(), constraint=dist.constraints.positive)
    pyro.sample("p", dist.Beta(a_q, b_q))


@register_model(
    observed=("y",),
    data_shapes={"n": ("G",), "y": ("G",)},
    default_dataset="binomial_synthetic",
    guide=beta_binomial_guide,
    references=(BDA3 + " (section 2.4, the binomial model)",),
    exact_posterior=beta_binomial_exact_posterior,
    exact_log_evidence=beta_binomial_exact_log_evidence,
)
def beta_binomial(n: Tensor, y: Tensor | None = None, prior_a: float = 1.0, prior_b: float = 1.0):
    """Binomial successes with a Beta prior on the shared success probability.

    p ~ Beta(prior_a, prior_b)
    y[i] ~ Binomial(n[i], p),  i = 1..G  (n[i] trials in group i)

    Exact: p | y ~ Beta(prior_a + sum y, prior_b + sum (n - y));
    log p(y) = sum_i log C(n[i], y[i]) + log B(prior_a + sum y, prior_b + sum(n - y))
               - log B(prior_a, prior_b).
    """
    n = torch.atleast_1d(_float(n))
    p = pyro.sample("p", dist.Beta(_float(prior_a), _float(prior_b)))
    with pyro.plate("groups", n.shape[-1], dim=-1):
        # p is a scalar site; under an outer vectorising plate it is (S, 1) and broadcasts.
        return pyro.sample("y", dist.Binomial(total_count=n, probs=p), obs=y)


# --------------------------------------------------------------------------------------------
# Normal mean with known noise
# --------------------------------------------------------------------------------------------


def _num_data(N: int | None, y: Tensor | None) -> int:
    if y is not None:
        return y.shape[-1]
    if N is None:
        raise ZooError("normal_normal needs either the observations 'y' or their number 'N'")
    return int(N)


def _normal_normal_parts(y, sigma) -> tuple[Tensor, Tensor]:
    if y is None:
        raise ZooError("normal_normal: the exact posterior needs the observations 'y'")
    y = _float(y)
    variance = _float(sigma).expand_as(y) ** 2
    return y, variance


def normal_normal_exact_posterior(
    N: int | None = None,
    y: Tensor | None = None,
    sigma: float | Tensor = 1.0,
    prior_loc: float = 0.0,
    prior_scale: float = 10.0,
) -> dict[str, dist.Distribution]:
    """mu | y ~ Normal: precisions add, the mean is the precision-weighted average."""
    y, variance = _normal_normal_parts(y, sigma)
    prior_precision = 1.0 / _float(prior_scale) ** 2
    precision = prior_precision + (1.0 / variance).sum()
    mean = (prior_precision * _float(prior_loc) + (y / variance).sum()) / precision
    return {"mu": dist.Normal(mean, precision.rsqrt())}


def normal_normal_exact_log_evidence(
    N: int | None = None,
    y: Tensor | None = None,
    sigma: float | Tensor = 1.0,
    prior_loc: float = 0.0,
    prior_scale: float = 10.0,
) -> float:
    """log MVN(y; prior_loc 1, diag(sigma^2) + prior_scale^2 1 1^T)."""
    y, variance = _normal_normal_parts(y, sigma)
    cov = torch.diag(variance) + _float(prior_scale) ** 2
    loc = _float(prior_loc).expand_as(y)
    return float(dist.MultivariateNormal(loc, covariance_matrix=cov).log_prob(y))


@register_model(
    observed=("y",),
    data_shapes={"y": ("N",)},
    default_dataset="normal_synthetic",
    references=(BDA3 + " (section 2.5, normal mean with known variance)", PRML),
    exact_posterior=normal_normal_exact_posterior,
    exact_log_evidence=normal_normal_exact_log_evidence,
)
def normal_normal(
    N: int | None = None,
    y: Tensor | None = None,
    sigma: float | Tensor = 1.0,
    prior_loc: float = 0.0,
    prior_scale: float = 10.0,
):
    """Normal observations with known noise and a Normal prior on their mean.

    mu ~ Normal(prior_loc, prior_scale)
    y[i] ~ Normal(mu, sigma),  i = 1..N  (sigma known: a scalar or one per observation)

    Exact: mu | y ~ Normal(m, s) with 1/s^2 = 1/prior_scale^2 + sum 1/sigma[i]^2,
    m = s^2 (prior_loc/prior_scale^2 + sum y[i]/sigma[i]^2);
    y ~ MultivariateNormal(prior_loc 1, diag(sigma^2) + prior_scale^2 1 1^T).
    """
    num_data = _num_data(N, y)
    mu = pyro.sample("mu", dist.Normal(_float(prior_loc), _float(prior_scale)))
    with pyro.plate("data", num_data, dim=-1):
        return pyro.sample("y", dist.Normal(mu, _float(sigma)), obs=y)


# --------------------------------------------------------------------------------------------
# Normal-inverse-gamma linear regression (used by zoo.models.regression)
# --------------------------------------------------------------------------------------------


class NIGPosterior(NamedTuple):
    """beta | sigma2, y ~ Normal(loc, sigma2 * cov); sigma2 | y ~ InverseGamma(a, b)."""

    loc: Tensor  # m_n, (D,)
    cov: Tensor  # V_n, (D, D): the posterior covariance of beta divided by sigma2
    concentration: Tensor  # a_n
    rate: Tensor  # b_n


def _prior_scales(prior_scale: float | Tensor, num_features: int) -> Tensor:
    return _float(prior_scale).expand(num_features)


def nig_posterior(
    x: Tensor, y: Tensor, prior_a: float, prior_b: float, prior_scale: float | Tensor
) -> NIGPosterior:
    """Posterior of y ~ Normal(x beta, sigma2 I), beta | sigma2 ~ Normal(0, sigma2 V0),
    sigma2 ~ InverseGamma(a0, b0), with V0 = diag(prior_scale^2):

    V_n = (V0^-1 + x^T x)^-1,  m_n = V_n x^T y,  a_n = a0 + N/2,
    b_n = b0 + (|y - x m_n|^2 + m_n^T V0^-1 m_n) / 2.
    """
    num_data, num_features = x.shape
    prior_precision = _prior_scales(prior_scale, num_features) ** -2
    precision = x.T @ x + torch.diag(prior_precision)
    chol = torch.linalg.cholesky(precision)
    loc = torch.cholesky_solve((x.T @ y).unsqueeze(-1), chol).squeeze(-1)
    # This form of b_n is a sum of squares, so it stays positive where y^T y - m^T P m
    # would cancel catastrophically.
    residual = y - x @ loc
    quad = residual @ residual + (prior_precision * loc**2).sum()
    return NIGPosterior(
        loc=loc,
        cov=torch.cholesky_inverse(chol),
        concentration=_float(prior_a) + num_data / 2.0,
        rate=_float(prior_b) + quad / 2.0,
    )


def nig_log_evidence(
    x: Tensor, y: Tensor, prior_a: float, prior_b: float, prior_scale: float | Tensor
) -> Tensor:
    """log p(y) of the NIG regression (a multivariate Student t in y):

    -N/2 log(2 pi) + (log|V_n| - log|V0|)/2 + a0 log b0 - a_n log b_n
    + log Gamma(a_n) - log Gamma(a0).
    """
    num_data, num_features = x.shape
    post = nig_posterior(x, y, prior_a, prior_b, prior_scale)
    a0, b0 = _float(prior_a), _float(prior_b)
    log_det_prior = 2.0 * torch.log(_prior_scales(prior_scale, num_features)).sum()
    log_det_post = torch.linalg.slogdet(post.cov)[1]
    return (
        -0.5 * num_data * math.log(2 * math.pi)
        + 0.5 * (log_det_post - log_det_prior)
        + a0 * torch.log(b0)
        - post.concentration * torch.log(post.rate)
        + torch.lgamma(post.concentration)
        - torch.lgamma(a0)
    )


def nig_marginals(post: NIGPosterior) -> dict[str, dist.Distribution]:
    """Exact marginals: sigma2 ~ InverseGamma(a_n, b_n) and, integrating sigma2 out,
    beta[d] ~ StudentT(2 a_n, m_n[d], sqrt(b_n / a_n * V_n[d, d]))."""
    scale = torch.sqrt(post.rate / post.concentration * torch.diagonal(post.cov))
    return {
        "beta": dist.StudentT(2.0 * post.concentration, post.loc, scale),
        "sigma2": dist.InverseGamma(post.concentration, post.rate),
    }


def nig_log_joint_posterior(post: NIGPosterior, beta: Tensor, sigma2: Tensor) -> Tensor:
    """log p(beta, sigma2 | y) of the NIG posterior (for checks via Bayes' rule)."""
    beta_given_sigma2 = dist.MultivariateNormal(post.loc, covariance_matrix=sigma2 * post.cov)
    sigma2_marginal = dist.InverseGamma(post.concentration, post.rate)
    return beta_given_sigma2.log_prob(beta) + sigma2_marginal.log_prob(sigma2)


def nig_update(x: Tensor, y: Tensor, prior: NIGPosterior) -> NIGPosterior:
    """The NIG posterior after observing (x, y) under a general NIG prior, e.g. the posterior of
    earlier batches (sequential updating: today's posterior is tomorrow's prior).

    Prior beta | sigma2 ~ Normal(m0, sigma2 V0), sigma2 ~ InverseGamma(a0, b0), and
    y ~ Normal(x beta, sigma2 I) give, with P0 = V0^-1:

    V_n = (P0 + x^T x)^-1,  m_n = V_n (P0 m0 + x^T y),  a_n = a0 + N/2,
    b_n = b0 + (|y - x m_n|^2 + (m_n - m0)^T P0 (m_n - m0)) / 2.

    With m0 = 0 and V0 = diag(prior_scale^2) this is ``nig_posterior``; since the likelihood
    factorises over batches given (beta, sigma2), updating batch by batch gives the posterior of
    all the data at once.
    """
    num_data = x.shape[0]
    prior_precision = torch.cholesky_inverse(torch.linalg.cholesky(prior.cov))
    precision = prior_precision + x.T @ x
    chol = torch.linalg.cholesky(precision)
    loc = torch.cholesky_solve((prior_precision @ prior.loc + x.T @ y).unsqueeze(-1), chol).squeeze(-1)
    # Sums of squares, as in nig_posterior: b_n stays positive without cancellation.
    residual, shift = y - x @ loc, loc - prior.loc
    quad = residual @ residual + shift @ prior_precision @ shift
    return NIGPosterior(loc=loc, cov=torch.cholesky_inverse(chol),
                        concentration=prior.concentration + num_data / 2.0,
                        rate=prior.rate + quad / 2.0)
