"""Time-series models: posteriordb's autoregression ``ar_k`` and the local-level model
``local_level``, with its exact counterpart ``local_level_kalman`` (Kalman filter and smoother).

Both vectorise over draws: the AR likelihood builds its lagged design matrix with one
``unfold`` (no loop over t) and the local level is written non-centred over its innovations, so
its states are one ``cumsum``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import Tensor

from ..errors import ZooError
from ..registry import register_model

POSTERIORDB = (
    "Magnusson, Torgander, Bürkner, Zhang, Carpenter & Vehtari (2024), posteriordb: testing, "
    "benchmarking and developing Bayesian inference algorithms, arXiv:2407.04967"
)
DURBIN_KOOPMAN = (
    "Durbin & Koopman (2012), Time Series Analysis by State Space Methods, 2nd ed., Oxford "
    "University Press, chapter 2 (the local level model; the Nile data)"
)


# --------------------------------------------------------------------------------------------
# AR(K), conditional on the first K values (posteriordb's arK)
# --------------------------------------------------------------------------------------------


class ConditionalAR(dist.TorchDistribution):
    """y[t] ~ Normal(alpha + sum_k beta[k] y[t-k], sigma) for t > K, given y[1..K].

    ``log_prob`` is pointwise over time (batch shape ``(..., T)``): 0 for the K conditioning
    values, the Normal one-step density after them; that is the Stan model's likelihood.
    ``sample`` draws a whole path, starting the recursion from zeros before t = 1 (Stan leaves
    y[1..K] unmodelled, so a simulation must start somewhere). alpha and sigma have shape ``()``
    or ``(..., 1)`` (they broadcast over time), beta ``(..., K)``.
    """

    arg_constraints = {"alpha": constraints.real,
                       "beta": constraints.independent(constraints.real, 1),
                       "sigma": constraints.positive}
    support = constraints.real

    def __init__(self, alpha: Tensor, beta: Tensor, sigma: Tensor, num_steps: int,
                 validate_args: bool | None = None):
        self.alpha, self.beta, self.sigma = alpha, beta, sigma
        self.order, self.num_steps = beta.shape[-1], int(num_steps)
        lead = torch.broadcast_shapes(alpha.shape, sigma.shape, beta.shape[:-1] + (1,))
        super().__init__(lead[:-1] + (self.num_steps,), validate_args=validate_args)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        k = self.order
        # Row i holds (y[i+K-1], ..., y[i]): the K lags of y[i+K], beta[0] multiplying lag 1.
        lags = value.unfold(-1, k, 1)[..., :-1, :].flip(-1)
        loc = self.alpha + (lags @ self.beta.unsqueeze(-1)).squeeze(-1)
        tail = dist.Normal(loc, self.sigma).log_prob(value[..., k:])
        return torch.cat([tail.new_zeros(tail.shape[:-1] + (k,)), tail], dim=-1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:
        k, shape = self.order, torch.Size(sample_shape) + self.batch_shape
        lead = shape[:-1] + (1,)
        alpha = self.alpha.expand(lead)[..., 0]
        sigma = self.sigma.expand(lead)[..., 0]
        beta = self.beta.expand(lead[:-1] + (k,))
        with torch.no_grad():
            eps = torch.randn(shape, dtype=alpha.dtype, device=alpha.device)
            path = alpha.new_zeros(shape[:-1] + (k + self.num_steps,))  # K zeros, then y
            for t in range(self.num_steps):  # simulation is sequential by nature
                lags = path[..., t:t + k].flip(-1)
                path[..., k + t] = alpha + (lags * beta).sum(-1) + sigma * eps[..., t]
        return path[..., k:]


def _ar_sizes(K: int, T: int | None, y: Tensor | None) -> tuple[int, int]:
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ZooError(f"ar_k: K={K!r} must be an integer >= 1 (the number of lags)")
    if y is not None:
        T = y.shape[-1]
    if T is None:
        raise ZooError("ar_k: give the observations 'y' or their number 'T' to simulate them")
    if T <= K:
        raise ZooError(f"ar_k: T={T} must exceed K={K} (the first K values are conditioned on)")
    return K, int(T)


@register_model(
    observed=("y",),
    data_shapes={"y": ("T",)},
    default_dataset="ar_synthetic",
    posteriordb=("arK-arK",),
    references=(
        POSTERIORDB + " (model arK, posterior arK-arK)",
        "Stan Development Team, Stan User's Guide, section 'Autoregressive models'",
        "Box, Jenkins, Reinsel & Ljung (2015), Time Series Analysis: Forecasting and Control, "
        "5th ed., chapter 3",
    ),
)
def ar_k(K: int, y: Tensor | None = None, T: int | None = None, alpha_scale: float = 10.0,
         beta_scale: float = 10.0, sigma_scale: float = 2.5):
    """Autoregression of order K, conditional on the first K values (posteriordb's arK).

    alpha ~ Normal(0, alpha_scale);  beta[k] ~ Normal(0, beta_scale), k = 1..K;
    sigma ~ HalfCauchy(sigma_scale);  y[t] ~ Normal(alpha + sum_k beta[k] y[t-k], sigma),
    t = K+1..T. The defaults (10, 10, 2.5) are posteriordb's. y[1..K] are conditioned on, not
    modelled (pointwise log-likelihood 0 there). The prior does not restrict beta to
    stationarity, so with posteriordb's scales prior-predictive paths (simulated from zeros
    before t = 1) mostly explode, as they would from the Stan model; beta_scale ~ 0.5 / K keeps
    most of them stationary (sum_k |beta_k| < 1).
    """
    K, T = _ar_sizes(K, T, y)
    for name, value in (("alpha_scale", alpha_scale), ("beta_scale", beta_scale),
                        ("sigma_scale", sigma_scale)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ZooError(f"ar_k: {name}={value!r} must be a number > 0 (a prior scale)")
    alpha = pyro.sample("alpha", dist.Normal(0.0, float(alpha_scale)))
    with pyro.plate("lags", K, dim=-1):
        beta = pyro.sample("beta", dist.Normal(0.0, float(beta_scale)))
    sigma = pyro.sample("sigma", dist.HalfCauchy(float(sigma_scale)))
    # Given the observed lags the y[t] are independent: the plate states that factorisation.
    with pyro.plate("time", T, dim=-1):
        return pyro.sample("y", ConditionalAR(alpha, beta, sigma, T), obs=y)


# --------------------------------------------------------------------------------------------
# Local level: random walk plus noise
# --------------------------------------------------------------------------------------------


def _length(y: Tensor | None, T: int | None) -> int:
    if y is not None:
        T = y.shape[-1]
    if T is None:
        raise ZooError(
            "local_level: give the observations 'y' or their number 'T' to simulate them")
    if T < 2:
        raise ZooError(f"local_level: T={T} must be >= 2")
    return int(T)


@register_model(
    observed=("y",),
    data_shapes={"y": ("T",)},
    default_dataset="local_level_synthetic",
    references=(
        DURBIN_KOOPMAN,
        "Harvey (1989), Forecasting, Structural Time Series Models and the Kalman Filter, "
        "Cambridge University Press",
    ),
    methods=("chees", "nuts", "svi"),
)
def local_level(y: Tensor | None = None, T: int | None = None, level_loc: float = 0.0,
                level_scale: float = 10.0, sigma_scale: float = 1.0):
    """Local level (random walk plus noise) state-space model, non-centred over innovations.

    sigma_eps ~ HalfNormal(sigma_scale);  sigma_eta ~ HalfNormal(sigma_scale)
    mu_init ~ Normal(level_loc, level_scale);  z[t] ~ Normal(0, 1),  t = 2..T
    mu[1] = mu_init;  mu[t] = mu[t-1] + sigma_eta z[t]   (one cumsum, deterministic)
    y[t] ~ Normal(mu[t], sigma_eps),  t = 1..T
    i.e. the random walk mu[t] ~ Normal(mu[t-1], sigma_eta), written over its standardised
    innovations so the posterior has no funnel in sigma_eta. For fixed scales the model is
    linear-Gaussian: ``local_level_kalman`` gives log p(y | scales) and the states' exact
    posterior. No Laplace: the joint density of (mu, sigma_eps) is unbounded (mu = y,
    sigma_eps -> 0), so there is no mode to expand around.
    """
    T = _length(y, T)
    sigma_eps = pyro.sample("sigma_eps", dist.HalfNormal(float(sigma_scale)))
    sigma_eta = pyro.sample("sigma_eta", dist.HalfNormal(float(sigma_scale)))
    # mu_init gets its own (centred) site: folding it into z would leave z[1] with a posterior
    # sd ~ sigma_eps / level_scale, far from the others' ~1, and HMC's step size would suffer.
    mu_init = pyro.sample("mu_init", dist.Normal(float(level_loc), float(level_scale)))
    with pyro.plate("innovations", T - 1, dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
    walk = torch.cumsum(sigma_eta * z, dim=-1)  # (..., T-1): broadcasts over draws
    walk = torch.cat([torch.zeros_like(walk[..., :1]), walk], dim=-1)
    with pyro.plate("time", T, dim=-1):
        mu = pyro.deterministic("mu", mu_init + walk)
        return pyro.sample("y", dist.Normal(mu, sigma_eps), obs=y)


class KalmanResult(NamedTuple):
    """Kalman filter and smoother output; leading dims are those of the scales."""

    log_likelihood: Tensor  # log p(y | scales), shape (...,)
    filtered_mean: Tensor  # E[mu[t] | y[1..t]], (..., T)
    filtered_var: Tensor
    smoothed_mean: Tensor  # E[mu[t] | y[1..T]], (..., T)
    smoothed_var: Tensor


def local_level_kalman(y: Tensor, sigma_eps: Tensor | float, sigma_eta: Tensor | float,
                       level_loc: Tensor | float = 0.0,
                       level_scale: Tensor | float = 10.0) -> KalmanResult:
    """Exact inference in the local level model for fixed scales (Durbin & Koopman 2012, 2.3-2.4).

    Filter, with a[1] = level_loc, P[1] = level_scale^2:
        v[t] = y[t] - a[t];  F[t] = P[t] + sigma_eps^2;  K[t] = P[t] / F[t]
        a[t|t] = a[t] + K[t] v[t];  P[t|t] = P[t] (1 - K[t]);  a[t+1] = a[t|t];
        P[t+1] = P[t|t] + sigma_eta^2
        log p(y) = -1/2 sum_t (log 2 pi + log F[t] + v[t]^2 / F[t])
    Smoother (Rauch-Tung-Striebel), backwards with J[t] = P[t|t] / P[t+1]:
        m[t] = a[t|t] + J[t] (m[t+1] - a[t+1]);  V[t] = P[t|t] + J[t]^2 (V[t+1] - P[t+1])
    The four parameters may be tensors of broadcastable shapes; everything is batched over
    them (and differentiable in them).
    """
    params = [torch.as_tensor(v, dtype=y.dtype)
              for v in (sigma_eps, sigma_eta, level_loc, level_scale)]
    shape = torch.broadcast_shapes(*(v.shape for v in params))
    sigma_eps, sigma_eta, a, level_scale = (v.expand(shape) for v in params)
    noise, drift, p = sigma_eps**2, sigma_eta**2, level_scale**2
    log_lik = torch.zeros(shape, dtype=y.dtype)
    pred_mean, pred_var, filt_mean, filt_var = [], [], [], []
    for t in range(y.shape[-1]):  # the recursion is sequential; O(T), not O(T^3)
        v, f = y[t] - a, p + noise
        gain = p / f
        log_lik = log_lik - 0.5 * (math.log(2 * math.pi) + f.log() + v**2 / f)
        pred_mean.append(a), pred_var.append(p)
        a, p = a + gain * v, p * noise / f  # = P (1 - K), without cancellation
        filt_mean.append(a), filt_var.append(p)
        p = p + drift
    mean, var = [filt_mean[-1]], [filt_var[-1]]
    for t in range(y.shape[-1] - 2, -1, -1):
        j = filt_var[t] / pred_var[t + 1]
        mean.append(filt_mean[t] + j * (mean[-1] - pred_mean[t + 1]))
        var.append(filt_var[t] + j**2 * (var[-1] - pred_var[t + 1]))
    stack = lambda xs: torch.stack(xs, dim=-1)  # noqa: E731
    return KalmanResult(log_lik, stack(filt_mean), stack(filt_var), stack(mean[::-1]),
                        stack(var[::-1]))
