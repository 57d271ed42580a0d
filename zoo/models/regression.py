"""Regression models: conjugate linear regression, logistic regression, and the polynomial
family ``polynomial_d0`` .. ``polynomial_d5`` (for Bayesian model selection by evidence).

All take ``subsample_size`` so SVI can minibatch: the data plate then scales the likelihood by
N / B. The closed forms of the normal-inverse-gamma (NIG) models live in ``zoo.models.conjugate``.
"""

from __future__ import annotations

import functools

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor

from ..errors import ZooError
from ..registry import register_model
from .conjugate import MURPHY_NIG, PRML, nig_log_evidence, nig_marginals, nig_posterior

GELMAN_LOGISTIC = (
    "Gelman, Jakulin, Pittau & Su (2008), A weakly informative default prior distribution for "
    "logistic and other regression models, Ann. Appl. Stat. 2(4)"
)

PRML_EVIDENCE = (
    "Bishop (2006), Pattern Recognition and Machine Learning, section 3.5 (the evidence "
    "of polynomial regression models versus their order)"
)

# NIG defaults, for inputs and targets of unit scale. sigma2 ~ InverseGamma(1, 0.1) is a
# scaled inverse-chi^2 with 2 degrees of freedom around sigma = 0.32: on the log scale its density
# stays within a factor 30 of its peak for sigma from 0.13 to 2.8, and is heavy-tailed beyond.
# beta | sigma2 ~ Normal(0, 5 sigma) leaves unit-scale coefficients essentially free while
# keeping the evidence finite (the evidence, unlike the posterior, depends on this scale).
PRIOR_A = 1.0
PRIOR_B = 0.1
PRIOR_SCALE = 5.0


def _nig_regression(
    features: Tensor,
    y: Tensor | None,
    prior_a: float,
    prior_b: float,
    prior_scale: float | Tensor,
    subsample_size: int | None,
) -> Tensor:
    """The NIG regression model body, shared by ``linear_regression`` and ``polynomial_d*``."""
    num_data, num_features = features.shape
    sigma2 = pyro.sample("sigma2", dist.InverseGamma(float(prior_a), float(prior_b)))
    sigma = pyro.deterministic("sigma", sigma2.sqrt())
    with pyro.plate("features", num_features, dim=-1):
        beta = pyro.sample("beta", dist.Normal(0.0, torch.as_tensor(prior_scale) * sigma))
    with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
        # matmul over a trailing column keeps any batch dims of beta (S, D) -> (S, B)
        loc = (features[idx] @ beta.unsqueeze(-1)).squeeze(-1)
        return pyro.sample("y", dist.Normal(loc, sigma), obs=None if y is None else y[idx])


def _observed(y: Tensor | None, model: str) -> Tensor:
    if y is None:
        raise ZooError(f"{model}: the exact posterior needs the observations 'y'")
    return y


# --------------------------------------------------------------------------------------------
# Linear regression (conjugate)
# --------------------------------------------------------------------------------------------


def linear_regression_exact_posterior(
    x: Tensor,
    y: Tensor | None = None,
    prior_a: float = PRIOR_A,
    prior_b: float = PRIOR_B,
    prior_scale: float = PRIOR_SCALE,
    subsample_size: int | None = None,
) -> dict[str, dist.Distribution]:
    """sigma2 ~ InverseGamma(a_n, b_n); beta[d] ~ StudentT(2 a_n, m_n[d], ...): nig_marginals."""
    y = _observed(y, "linear_regression")
    return nig_marginals(nig_posterior(x, y, prior_a, prior_b, prior_scale))


def linear_regression_exact_log_evidence(
    x: Tensor,
    y: Tensor | None = None,
    prior_a: float = PRIOR_A,
    prior_b: float = PRIOR_B,
    prior_scale: float = PRIOR_SCALE,
    subsample_size: int | None = None,
) -> float:
    """The NIG marginal likelihood (see nig_log_evidence)."""
    y = _observed(y, "linear_regression")
    return float(nig_log_evidence(x, y, prior_a, prior_b, prior_scale))


@register_model(
    observed=("y",),
    data_shapes={"x": ("N", "D"), "y": ("N",)},
    default_dataset="linear_synthetic",
    references=(PRML, MURPHY_NIG),
    exact_posterior=linear_regression_exact_posterior,
    exact_log_evidence=linear_regression_exact_log_evidence,
)
def linear_regression(
    x: Tensor,
    y: Tensor | None = None,
    prior_a: float = PRIOR_A,
    prior_b: float = PRIOR_B,
    prior_scale: float = PRIOR_SCALE,
    subsample_size: int | None = None,
):
    """Linear regression with the conjugate normal-inverse-gamma prior.

    sigma2 ~ InverseGamma(prior_a, prior_b);  sigma = sqrt(sigma2)
    beta[d] | sigma2 ~ Normal(0, prior_scale * sigma),  d = 1..D
    y[n] ~ Normal(x[n] . beta, sigma),  n = 1..N
    The design matrix x is used as given: put a column of ones in it for an intercept.

    Exact: sigma2 | y ~ InverseGamma(a_n, b_n); beta[d] | y ~ StudentT(2 a_n, m_n[d],
    sqrt(b_n / a_n V_n[d, d])) with V_n = (x^T x + I / prior_scale^2)^-1, m_n = V_n x^T y,
    a_n = prior_a + N/2, b_n = prior_b + (|y - x m_n|^2 + |m_n|^2 / prior_scale^2) / 2.
    """
    return _nig_regression(x, y, prior_a, prior_b, prior_scale, subsample_size)


# --------------------------------------------------------------------------------------------
# Logistic regression
# --------------------------------------------------------------------------------------------


@register_model(
    observed=("y",),
    data_shapes={"x": ("N", "D"), "y": ("N",)},
    default_dataset="logistic_synthetic",
    references=(
        GELMAN_LOGISTIC,
        "Bishop (2006), Pattern Recognition and Machine Learning, section 4.5",
    ),
)
def logistic_regression(
    x: Tensor,
    y: Tensor | None = None,
    prior_scale: float = 2.5,
    subsample_size: int | None = None,
):
    """Logistic regression with independent Normal priors on the intercept and coefficients.

    alpha ~ Normal(0, prior_scale)
    beta[d] ~ Normal(0, prior_scale),  d = 1..D
    y[n] ~ Bernoulli(logit^-1(alpha + x[n] . beta)),  n = 1..N
    No closed form: the posterior is log-concave but not conjugate.
    """
    num_data, num_features = x.shape
    alpha = pyro.sample("alpha", dist.Normal(0.0, float(prior_scale)))
    with pyro.plate("features", num_features, dim=-1):
        beta = pyro.sample("beta", dist.Normal(0.0, float(prior_scale)))
    with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
        logits = alpha + (x[idx] @ beta.unsqueeze(-1)).squeeze(-1)
        return pyro.sample("y", dist.Bernoulli(logits=logits), obs=None if y is None else y[idx])


# --------------------------------------------------------------------------------------------
# Polynomial regression family: polynomial_d0 .. polynomial_d5
# --------------------------------------------------------------------------------------------

MAX_DEGREE = 5


def polynomial_features(x: Tensor, degree: int) -> Tensor:
    """The design matrix [1, x, x^2, ..., x^degree], shape (N, degree + 1)."""
    powers = torch.arange(degree + 1, dtype=x.dtype, device=x.device)
    return x.unsqueeze(-1) ** powers


# ``degree`` comes first and is bound positionally by functools.partial, so the registered
# models' signatures do not offer it as a data key (a recipe cannot silently change it).
def polynomial_regression(
    degree: int,
    x: Tensor,
    y: Tensor | None = None,
    prior_a: float = PRIOR_A,
    prior_b: float = PRIOR_B,
    prior_scale: float = PRIOR_SCALE,
    subsample_size: int | None = None,
):
    """NIG linear regression on the polynomial features [1, x, ..., x^degree] of a 1-D x."""
    features = polynomial_features(x, degree)
    return _nig_regression(features, y, prior_a, prior_b, prior_scale, subsample_size)


def _on_polynomial_features(
    exact,
    degree: int,
    x: Tensor,
    y: Tensor | None = None,
    prior_a: float = PRIOR_A,
    prior_b: float = PRIOR_B,
    prior_scale: float = PRIOR_SCALE,
    subsample_size: int | None = None,
):
    """A linear_regression closed form evaluated on the design matrix [1, x, ..., x^degree]
    (the signature is the model's, so the spec's exact forms take the same arguments)."""
    return exact(polynomial_features(x, degree), y, prior_a, prior_b, prior_scale, subsample_size)


_POLYNOMIAL_DOC = """Polynomial regression of degree {k} with the conjugate NIG prior.

sigma2 ~ InverseGamma(prior_a, prior_b);  sigma = sqrt(sigma2)
beta[j] | sigma2 ~ Normal(0, prior_scale * sigma),  j = 0..{k}
y[n] ~ Normal(sum_j beta[j] x[n]^j, sigma),  n = 1..N  (x is 1-D, best scaled to [-1, 1])

Exact posterior and evidence as linear_regression with the design matrix [1, x, ..., x^{k}];
comparing log p(y) across polynomial_d0 .. polynomial_d{max} is Bayesian model selection.
"""

for _k in range(MAX_DEGREE + 1):
    # partials of module-level functions pickle (chains may run in subprocesses); closures
    # would not.
    register_model(
        functools.partial(polynomial_regression, _k),
        name=f"polynomial_d{_k}",
        family="polynomial",
        description=_POLYNOMIAL_DOC.format(k=_k, max=MAX_DEGREE),
        observed=("y",),
        data_shapes={"x": ("N",), "y": ("N",)},
        default_dataset="polynomial_synthetic",
        references=(PRML_EVIDENCE, MURPHY_NIG),
        exact_posterior=functools.partial(
            _on_polynomial_features, linear_regression_exact_posterior, _k),
        exact_log_evidence=functools.partial(
            _on_polynomial_features, linear_regression_exact_log_evidence, _k),
    )
del _k


# --------------------------------------------------------------------------------------------
# posteriordb's blr: linear regression with vague independent priors (not conjugate)
# --------------------------------------------------------------------------------------------

POSTERIORDB_BLR = (
    "Magnusson, Torgander, Bürkner, Zhang, Carpenter & Vehtari (2024), posteriordb: testing, "
    "benchmarking and developing Bayesian inference algorithms, arXiv:2407.04967 (model blr, "
    "posterior sblri-blr)"
)


@register_model(
    observed=("y",),
    data_shapes={"X": ("N", "D"), "y": ("N",)},
    default_dataset="blr_synthetic",
    posteriordb=("sblri-blr",),
    references=(POSTERIORDB_BLR, "Gelman et al. (2013), Bayesian Data Analysis, 3rd ed., chapter 14"),
)
def blr(
    X: Tensor,
    y: Tensor | None = None,
    N: int | None = None,
    D: int | None = None,
    subsample_size: int | None = None,
):
    """Bayesian linear regression with vague priors, posteriordb's blr (Stan's data names).

    beta[d] ~ Normal(0, 10),  d = 1..D
    sigma ~ HalfNormal(10)   (Stan: normal(0, 10) on sigma > 0)
    y[n] ~ Normal(X[n] . beta, sigma),  n = 1..N
    No intercept unless X has a column of ones. The priors are independent (sigma does not
    scale beta), so unlike linear_regression there is no closed form.
    """
    num_data, num_features = X.shape
    with pyro.plate("features", num_features, dim=-1):
        beta = pyro.sample("beta", dist.Normal(0.0, 10.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(10.0))
    with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
        loc = (X[idx] @ beta.unsqueeze(-1)).squeeze(-1)
        return pyro.sample("y", dist.Normal(loc, sigma), obs=None if y is None else y[idx])


# --------------------------------------------------------------------------------------------
# posteriordb's diamonds: brms's Gaussian regression on centred predictors
# --------------------------------------------------------------------------------------------


@register_model(
    observed=("Y",),
    data_shapes={"Y": ("N",), "X": ("N", "K")},
    default_dataset="posteriordb",
    posteriordb=("diamonds-diamonds",),
    references=(
        POSTERIORDB_BLR.replace("model blr, posterior sblri-blr", "model diamonds, posterior "
                                "diamonds-diamonds"),
        "Bürkner (2017), brms: an R package for Bayesian multilevel models using Stan, Journal "
        "of Statistical Software 80(1) (the Stan program is brms's)",
    ),
)
def diamonds(X: Tensor, Y: Tensor | None = None, N: int | None = None, K: int | None = None,
             prior_only: int = 0):
    """Diamond prices on 24 predictors, brms's Gaussian regression (posteriordb's diamonds).

    Xc = X[:, 1:] minus its column means (X's first column is the intercept's ones)
    b[k] ~ Normal(0, 1);  Intercept ~ StudentT(3, 8, 10);  sigma ~ StudentT+(3, 0, 10)
    Y[n] ~ Normal(Intercept + Xc[n] . b, sigma)   (left unobserved when prior_only)
    The predictors are strongly correlated (polynomial terms of carat, cut, colour and
    clarity): a hard posterior for a diagonal metric.
    """
    Xc = X[:, 1:] - X[:, 1:].mean(0)
    with pyro.plate("coefficients", Xc.shape[-1], dim=-1):
        b = pyro.sample("b", dist.Normal(0.0, 1.0))
    intercept = pyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    # Stan's student_t_lpdf(sigma | 3, 0, 10) - student_t_lccdf(0 | 3, 0, 10): the half-t
    sigma = pyro.sample("sigma", dist.FoldedDistribution(dist.StudentT(3.0, 0.0, 10.0)))
    loc = intercept + (Xc @ b.unsqueeze(-1)).squeeze(-1)  # under S draws: (S, 1) + (S, N)
    with pyro.plate("data", Xc.shape[0], dim=-1):
        return pyro.sample("Y", dist.Normal(loc, sigma),
                           obs=None if prior_only else Y)
