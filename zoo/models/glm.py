"""Generalised linear models: robust (Student-t), Poisson, negative-binomial, ordinal logistic
and regularised-horseshoe regression.

Every model takes a design matrix ``x`` of shape (N, D) *without* a column of ones (the
intercept ``alpha`` is its own site; the ordinal model has none, its cutpoints take that role)
and ``subsample_size`` so SVI can minibatch: the data plate then scales the likelihood by N / B.
Priors are weakly informative for standardised inputs. All four methods run on all five: each
log density vectorises over chains (matmul on trailing dims, as in ``regression``) and
has a mode with a positive-definite Hessian in unconstrained space on its default data set.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor

from ..errors import ZooError
from ..registry import register_model

GELMAN_HILL = ("Gelman & Hill (2007), Data Analysis Using Regression and Multilevel/Hierarchical "
               "Models, chapter 6 (Poisson regression, exposure and overdispersion)")
MCCULLAGH_NELDER = "McCullagh & Nelder (1989), Generalized Linear Models, 2nd ed., chapter 6"
JUAREZ_STEEL = ("Juarez & Steel (2010), Model-based clustering of non-Gaussian panel data based "
                "on skew-t distributions, J. Bus. Econ. Stat. 28(1) (the Gamma(2, 0.1) prior "
                "on nu)")
LANGE = ("Lange, Little & Taylor (1989), Robust statistical modeling using the t distribution, "
         "J. Am. Stat. Assoc. 84(408)")
STAN_PRIORS = ("Stan prior choice recommendations, "
               "github.com/stan-dev/stan/wiki/Prior-Choice-Recommendations")
HILBE = "Hilbe (2011), Negative Binomial Regression, 2nd ed. (the NB2 parameterisation)"
MCCULLAGH_ORDINAL = ("McCullagh (1980), Regression models for ordinal data, J. R. Stat. Soc. B "
                     "42(2)")
BETANCOURT_ORDINAL = ("Betancourt (2019), Ordinal regression, betanalpha.github.io/assets/"
                      "case_studies/ordinal_regression.html (the induced Dirichlet prior)")
PIIRONEN_VEHTARI = ("Piironen & Vehtari (2017), Sparsity information and regularization in the "
                    "horseshoe and other shrinkage priors, Electron. J. Stat. 11(2)")
CARVALHO = ("Carvalho, Polson & Scott (2010), The horseshoe estimator for sparse signals, "
            "Biometrika 97(2)")


def _linear_predictor(alpha: Tensor, x: Tensor, beta: Tensor) -> Tensor:
    # matmul over a trailing column keeps any batch dims of beta (S, D) -> (S, B); under an
    # outer plate of S draws a scalar site such as alpha is (S, 1) and broadcasts as it is
    return alpha + (x @ beta.unsqueeze(-1)).squeeze(-1)


def _intercept_and_coefficients(num_features: int, intercept_scale: float, prior_scale: float):
    alpha = pyro.sample("alpha", dist.Normal(0.0, float(intercept_scale)))
    with pyro.plate("features", num_features, dim=-1):
        beta = pyro.sample("beta", dist.Normal(0.0, float(prior_scale)))
    return alpha, beta


def _rows(t: Tensor | None, idx: Tensor) -> Tensor | None:
    return None if t is None else t[idx]


# --------------------------------------------------------------------------------------------
# Robust regression
# --------------------------------------------------------------------------------------------

NU_PRIOR = (2.0, 0.1)  # Gamma(shape, rate) on the Student-t degrees of freedom


@register_model(
    observed=("y",),
    data_shapes={"x": ("N", "D"), "y": ("N",)},
    default_dataset="robust_synthetic",
    references=(JUAREZ_STEEL, LANGE, STAN_PRIORS),
)
def robust_regression(
    x: Tensor,
    y: Tensor | None = None,
    nu: float | None = None,
    intercept_scale: float = 2.5,
    prior_scale: float = 2.5,
    sigma_scale: float = 2.5,
    subsample_size: int | None = None,
):
    """Robust linear regression: a Student-t likelihood with learned degrees of freedom.

    alpha ~ Normal(0, intercept_scale)
    beta[d] ~ Normal(0, prior_scale),  d = 1..D
    sigma ~ HalfNormal(sigma_scale)
    nu ~ Gamma(2, 0.1)  (rate 0.1; or fixed by passing nu)
    y[n] ~ StudentT(nu, alpha + x[n] . beta, sigma),  n = 1..N

    nu is learned by default, with the Gamma(2, 0.1) prior of Juarez & Steel (2010) that the
    Stan prior-choice wiki recommends: mean 20 and mode 10 (near-Normal tails a priori) but 5%
    below nu = 3.6, so heavy tails are found when outliers demand them, and its density
    vanishing at nu = 0 keeps the posterior out of the corner where the t loses its mean and
    the likelihood of a few outliers runs away. Passing a number (e.g. nu=4) fixes it, the
    usual choice when N is too small to learn the tails.
    """
    num_data, num_features = x.shape
    alpha, beta = _intercept_and_coefficients(num_features, intercept_scale, prior_scale)
    sigma = pyro.sample("sigma", dist.HalfNormal(float(sigma_scale)))
    if nu is None:
        nu = pyro.sample("nu", dist.Gamma(*NU_PRIOR))
    nu = torch.as_tensor(nu, dtype=x.dtype, device=x.device)
    with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
        loc = _linear_predictor(alpha, x[idx], beta)
        return pyro.sample("y", dist.StudentT(nu, loc, sigma), obs=_rows(y, idx))


# --------------------------------------------------------------------------------------------
# Count regressions: Poisson and negative binomial (NB2)
# --------------------------------------------------------------------------------------------


def _log_mean(alpha, x: Tensor, beta: Tensor, offset: Tensor | None, idx: Tensor) -> Tensor:
    eta = _linear_predictor(alpha, x[idx], beta)
    return eta if offset is None else eta + offset[idx]


@register_model(
    observed=("y",),
    data_shapes={"x": ("N", "D"), "y": ("N",), "offset": ("N",)},
    default_dataset="poisson_synthetic",
    references=(MCCULLAGH_NELDER, GELMAN_HILL),
)
def poisson_regression(
    x: Tensor,
    y: Tensor | None = None,
    offset: Tensor | None = None,
    intercept_scale: float = 2.5,
    prior_scale: float = 1.0,
    subsample_size: int | None = None,
):
    """Poisson regression with a log link and an optional log-exposure offset.

    alpha ~ Normal(0, intercept_scale)
    beta[d] ~ Normal(0, prior_scale),  d = 1..D
    log mu[n] = alpha + x[n] . beta + offset[n]  (offset = log exposure; 0 if not given)
    y[n] ~ Poisson(mu[n]),  n = 1..N

    prior_scale = 1 on the log scale says a one-sd change in a standardised input multiplies
    the rate by at most about e^2 = 7.4 (95%); the wider intercept prior leaves the baseline
    rate free (e^+-5).
    """
    num_data, num_features = x.shape
    alpha, beta = _intercept_and_coefficients(num_features, intercept_scale, prior_scale)
    with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
        log_mu = _log_mean(alpha, x, beta, offset, idx)
        return pyro.sample("y", dist.Poisson(log_mu.exp()), obs=_rows(y, idx))


def nb2(log_mu: Tensor, phi: Tensor) -> dist.NegativeBinomial:
    """NB2 with mean mu = exp(log_mu) and concentration phi: variance mu + mu^2 / phi.

    torch's NegativeBinomial(total_count=r, logits=l) has mean r e^l and variance
    r e^l (1 + e^l); r = phi and l = log mu - log phi give mean mu and variance
    mu (1 + mu / phi). It is the Gamma(phi, phi / mu)-Poisson mixture, evaluated from the
    logits so that no exp(log mu) can overflow."""
    return dist.NegativeBinomial(total_count=phi, logits=log_mu - phi.log())


def inverse_sqrt_half_normal(scale: float) -> dist.TransformedDistribution:
    """The law of phi when 1/sqrt(phi) ~ HalfNormal(scale): phi = u^-2 with u half-normal."""
    return dist.TransformedDistribution(
        dist.HalfNormal(float(scale)), [dist.transforms.PowerTransform(-2.0)])


@register_model(
    observed=("y",),
    data_shapes={"x": ("N", "D"), "y": ("N",), "offset": ("N",)},
    default_dataset="negbinomial_synthetic",
    references=(HILBE, GELMAN_HILL, STAN_PRIORS),
)
def negbinomial_regression(
    x: Tensor,
    y: Tensor | None = None,
    offset: Tensor | None = None,
    intercept_scale: float = 2.5,
    prior_scale: float = 1.0,
    dispersion_scale: float = 1.0,
    subsample_size: int | None = None,
):
    """Negative-binomial (NB2) regression: overdispersed counts with a log link.

    alpha ~ Normal(0, intercept_scale)
    beta[d] ~ Normal(0, prior_scale),  d = 1..D
    1 / sqrt(phi) ~ HalfNormal(dispersion_scale)  (phi is the sampled site)
    log mu[n] = alpha + x[n] . beta + offset[n]  (offset = log exposure; 0 if not given)
    y[n] ~ NegativeBinomial2(mu[n], phi): E y = mu, Var y = mu + mu^2 / phi

    y[n] is Poisson with a Gamma(phi, phi / mu[n]) rate, whose coefficient of variation is
    1 / sqrt(phi): the prior on that (the Stan prior-choice wiki's generic choice for the
    negative binomial) puts its mode at the Poisson model (phi -> infinity) and keeps the
    rate's extra noise below a CV of about 2 (95%), where a flat or Gamma prior on phi itself
    would say little about the Poisson limit.
    """
    num_data, num_features = x.shape
    alpha, beta = _intercept_and_coefficients(num_features, intercept_scale, prior_scale)
    phi = pyro.sample("phi", inverse_sqrt_half_normal(dispersion_scale))
    with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
        log_mu = _log_mean(alpha, x, beta, offset, idx)
        return pyro.sample("y", nb2(log_mu, phi), obs=_rows(y, idx))


# --------------------------------------------------------------------------------------------
# Ordinal logistic regression
# --------------------------------------------------------------------------------------------


def ordinal_log_probs(cutpoints: Tensor) -> Tensor:
    """log p_k of OrderedLogistic's K categories at predictor 0, from K - 1 ordered cutpoints:
    p_0 = s(c_0), p_k = s(c_k) - s(c_{k-1}), p_{K-1} = 1 - s(c_{K-2}) (s the logistic CDF).

    A difference of sigmoids cancels catastrophically; s(b) - s(a) = s(b) s(-a) (1 - e^(a-b))
    does not."""
    c = cutpoints
    first = F.logsigmoid(c[..., :1])
    last = F.logsigmoid(-c[..., -1:])
    lo, hi = c[..., :-1], c[..., 1:]
    middle = F.logsigmoid(hi) + F.logsigmoid(-lo) + torch.log(-torch.expm1(lo - hi))
    return torch.cat([first, middle, last], dim=-1)


class InducedDirichlet(TorchDistribution):
    """Betancourt's (2019) induced Dirichlet prior on K - 1 ordered cutpoints.

    The category probabilities p(c - anchor) of an OrderedLogistic at predictor ``anchor`` are
    Dirichlet(concentration); the density of c is that Dirichlet density times the Jacobian
    |det dp/dc| = prod_k s'(c_k - anchor) (the map c -> cumulative probabilities is diagonal
    with entries s', and cumulative -> p is a difference with determinant 1). Sampling inverts
    the map: p ~ Dirichlet, c_k = anchor + logit(p_0 + ... + p_k). The support is Pyro's
    ordered vector, so inference runs on its OrderedTransform.
    """

    arg_constraints = {"concentration": constraints.independent(constraints.positive, 1),
                       "anchor": constraints.real}
    support = constraints.ordered_vector

    def __init__(self, concentration: Tensor, anchor: Tensor | float = 0.0, validate_args=None):
        concentration = torch.as_tensor(concentration)
        anchor = torch.as_tensor(anchor, dtype=concentration.dtype, device=concentration.device)
        if not torch.jit.is_tracing() and (concentration.dim() < 1 or concentration.shape[-1] < 2):
            raise ZooError(f"InducedDirichlet: concentration needs >= 2 categories on its last "
                           f"dim, got shape {tuple(concentration.shape)}")
        batch_shape = torch.broadcast_shapes(concentration.shape[:-1], anchor.shape)
        self.concentration = concentration.expand(batch_shape + concentration.shape[-1:])
        self.anchor = anchor.expand(batch_shape)
        event_shape = torch.Size([concentration.shape[-1] - 1])
        super().__init__(batch_shape, event_shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(InducedDirichlet, _instance)
        batch_shape = torch.Size(batch_shape)
        new.concentration = self.concentration.expand(batch_shape + self.concentration.shape[-1:])
        new.anchor = self.anchor.expand(batch_shape)
        super(InducedDirichlet, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            p = dist.Dirichlet(self.concentration).sample(sample_shape)
            tiny = torch.finfo(p.dtype).tiny
            cumulative = p.cumsum(-1)[..., :-1].clamp(tiny, 1.0 - torch.finfo(p.dtype).eps)
            return self.anchor.unsqueeze(-1) + torch.logit(cumulative)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        c = value - self.anchor.unsqueeze(-1)
        a = self.concentration
        log_p = ordinal_log_probs(c)
        # a = 1 contributes nothing even where p underflows to 0 (0 * -inf would be NaN)
        weighted = torch.where(a == 1, torch.zeros_like(log_p), (a - 1) * log_p)
        log_dirichlet = torch.lgamma(a.sum(-1)) - torch.lgamma(a).sum(-1) + weighted.sum(-1)
        log_jacobian = (F.logsigmoid(c) + F.logsigmoid(-c)).sum(-1)  # log s'(c) = log s(c) s(-c)
        return log_dirichlet + log_jacobian


@register_model(
    observed=("y",),
    data_shapes={"x": ("N", "D"), "y": ("N",)},
    default_dataset="ordinal_synthetic",
    references=(MCCULLAGH_ORDINAL, BETANCOURT_ORDINAL),
)
def ordinal_logistic(
    x: Tensor,
    num_categories: int,
    y: Tensor | None = None,
    prior_scale: float = 2.5,
    cutpoint_concentration: float = 1.0,
    subsample_size: int | None = None,
):
    """Ordinal logistic (proportional-odds) regression on K ordered categories 0..K-1.

    beta[d] ~ Normal(0, prior_scale),  d = 1..D
    c ~ InducedDirichlet(cutpoint_concentration * 1_K)  (K - 1 ordered cutpoints)
    y[n] ~ OrderedLogistic(x[n] . beta, c),  n = 1..N
    i.e. with eta[n] = x[n] . beta, P(y[n] <= k) = logistic(c_k - eta[n]), so
    P(y[n] = k) = logistic(c_k - eta[n]) - logistic(c_{k-1} - eta[n])
    (c_{-1} = -inf, c_{K-1} = +inf)

    No intercept: a shift of every cutpoint is one. The induced Dirichlet (Betancourt 2019) puts
    a Dirichlet prior on the category probabilities at eta = 0, which mean something, where a
    Normal on the cutpoints is a prior on an abstract latent scale: as its scale grows the
    cutpoints spread out and the implied probabilities collapse onto the one or two categories
    around eta = 0. Concentration 1 makes every baseline probability vector equally likely a
    priori; the prior is proper (so the prior predictive runs), and the cutpoints on either
    side of a category nobody chose stay finite, where a flat prior would let them run off.
    """
    num_data, num_features = x.shape
    if not isinstance(num_categories, int) or num_categories < 2:
        raise ZooError(f"ordinal_logistic: num_categories={num_categories!r} must be an int >= 2")
    with pyro.plate("features", num_features, dim=-1):
        beta = pyro.sample("beta", dist.Normal(0.0, float(prior_scale)))
    concentration = torch.full((num_categories,), float(cutpoint_concentration),
                               dtype=x.dtype, device=x.device)
    cutpoints = pyro.sample("cutpoints", InducedDirichlet(concentration))
    with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
        eta = (x[idx] @ beta.unsqueeze(-1)).squeeze(-1)
        # OrderedLogistic compares cutpoints (K-1,) or, under an outer plate of S draws,
        # (S, 1, K-1) with eta unsqueezed to (B, 1) or (S, B, 1)
        likelihood = dist.OrderedLogistic(eta, cutpoints)
        return pyro.sample("y", likelihood, obs=_rows(y, idx))


# --------------------------------------------------------------------------------------------
# Regularised horseshoe
# --------------------------------------------------------------------------------------------


def global_scale(p0: float, num_features: int, num_data: int) -> float | Tensor:
    """Piironen & Vehtari's tau0 / sigma = p0 / (D - p0) / sqrt(N): with this scale the prior's
    expected number of effectively non-zero coefficients is about p0.

    Under torch.jit.trace the sizes are traced tensors: the check already ran eagerly, and
    ``** 0.5`` (not math.sqrt) keeps the scale a tensor that the trace follows."""
    if not torch.jit.is_tracing() and not 0 < p0 < num_features:
        raise ZooError(f"horseshoe_regression: p0={p0} (expected number of non-zero "
                       f"coefficients) must lie strictly between 0 and D={num_features}")
    return p0 / (num_features - p0) / num_data**0.5


@register_model(
    observed=("y",),
    data_shapes={"x": ("N", "D"), "y": ("N",)},
    default_dataset="horseshoe_synthetic",
    references=(PIIRONEN_VEHTARI, CARVALHO),
)
def horseshoe_regression(
    x: Tensor,
    y: Tensor | None = None,
    p0: float = 3.0,
    slab_scale: float = 2.0,
    slab_df: float = 4.0,
    intercept_scale: float = 2.5,
    sigma_scale: float = 2.5,
    subsample_size: int | None = None,
):
    """Sparse linear regression with the regularised horseshoe prior, non-centred.

    alpha ~ Normal(0, intercept_scale);  sigma ~ HalfNormal(sigma_scale)
    tau ~ HalfCauchy(tau0),  tau0 = p0 / (D - p0) * sigma / sqrt(N)  (global scale)
    lambda[d] ~ HalfCauchy(1),  d = 1..D  (local scales)
    c2 ~ InverseGamma(slab_df / 2, slab_df * slab_scale^2 / 2)  (slab width c^2)
    lambda_tilde[d] = sqrt(c2 lambda[d]^2 / (c2 + tau^2 lambda[d]^2))
    z[d] ~ Normal(0, 1);  beta[d] = tau * lambda_tilde[d] * z[d]  (deterministic)
    y[n] ~ Normal(alpha + x[n] . beta, sigma),  n = 1..N

    p0 is the prior guess of the number of non-zero coefficients (Piironen & Vehtari 2017,
    eq. 3.12); the slab keeps large coefficients at most Normal(0, c^2), so they are regularised
    instead of left completely free as under the plain horseshoe (c -> infinity). Non-centred:
    the sampler sees z, whose prior does not depend on tau or lambda, not the funnel of beta.
    """
    num_data, num_features = x.shape
    scale0 = global_scale(float(p0), num_features, num_data)
    alpha = pyro.sample("alpha", dist.Normal(0.0, float(intercept_scale)))
    sigma = pyro.sample("sigma", dist.HalfNormal(float(sigma_scale)))
    tau = pyro.sample("tau", dist.HalfCauchy(scale0 * sigma))
    c2 = pyro.sample("c2", dist.InverseGamma(0.5 * slab_df, 0.5 * slab_df * slab_scale**2))
    with pyro.plate("features", num_features, dim=-1):
        lam = pyro.sample("lambda", dist.HalfCauchy(1.0))
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        lambda_tilde = torch.sqrt(c2 * lam**2 / (c2 + tau**2 * lam**2))
        beta = pyro.deterministic("beta", tau * lambda_tilde * z)
    with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
        loc = _linear_predictor(alpha, x[idx], beta)
        return pyro.sample("y", dist.Normal(loc, sigma), obs=_rows(y, idx))
