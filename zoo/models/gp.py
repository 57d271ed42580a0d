"""Gaussian-process regression: the exact GP with f marginalised, and a sparse (inducing-point) GP.

Both put the same weakly informative priors on the hyperparameters (Betancourt 2017):

    lengthscale ~ InverseGamma(a, b)   1% of the mass below 0.5 and 1% above 10, the spacing and
                                       range of the default inputs (``lengthscale_prior`` retunes)
    amplitude ~ HalfNormal(2)          marginal sd of f: kernel variance = amplitude²
    sigma ~ HalfNormal(1)              noise sd: contrib.gp's ``noise`` = sigma²

The kernels and sparse pieces are torch code following ``pyro.contrib.gp``'s formulas, not its
modules: those hold hyperparameters as module attributes and do not broadcast over a batch of
them, which many-chain samplers and vectorised evaluation need (``RBF`` with a lengthscale of
shape (S,) silently treats it as S ARD lengthscales of an S-dimensional input; (S, 1) fails to
broadcast and (S, 1, 1) fails in ``Tensor.t()``; batched inputs are refused; the models add
jitter in place on 2-D views; ``torch.func.vmap`` over a kernel runs ~5x slower and defeats
``torch.jit.trace``). The tests hold them to contrib.gp's ``RBF``, ``Matern52``,
``GPRegression`` and ``SparseGPRegression`` (densities and predictions) at fixed hyperparameters.
Hyperparameters broadcast as () or (..., 1), a site's shape under an outer batch plate.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Mapping

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor
from torch.distributions import constraints

from ..data import prepare, to_tensor
from ..errors import ZooError, unknown
from ..registry import get_model, register_model

REFERENCES = (
    "Rasmussen & Williams (2006), Gaussian Processes for Machine Learning, MIT Press, ch. 2 and 5",
    "Betancourt (2017), Robust Gaussian Processes in Stan, case study "
    "(inverse-gamma lengthscale prior tuned by its tails)",
)
SPARSE_REFERENCES = REFERENCES + (
    "Titsias (2009), Variational learning of inducing variables in sparse Gaussian processes, "
    "AISTATS (VFE)",
    "Quinonero-Candela & Rasmussen (2005), A unifying view of sparse approximate Gaussian "
    "process regression, JMLR 6 (DTC, FITC)",
    "Bauer, van der Wilk & Rasmussen (2016), Understanding probabilistic sparse Gaussian process "
    "approximations, NeurIPS (why VFE rather than FITC)",
)

# InverseGamma(a, b) with 1% below 0.5 and 1% above 10: lengthscale_prior(0.5, 10.0), rounded.
LENGTHSCALE_CONCENTRATION = 2.93854
LENGTHSCALE_RATE = 4.15087
AMPLITUDE_SCALE = 2.0
SIGMA_SCALE = 1.0
JITTER = 1e-6  # contrib.gp's default: added to the diagonal before every Cholesky
NUM_INDUCING = 15
MIN_BLOCK = 64  # ChainRuleLowRankMultivariateNormal's smallest block of data
APPROXIMATIONS = ("VFE", "DTC", "FITC")
_SQRT5 = math.sqrt(5.0)


def _matern52(r2: Tensor) -> Tensor:
    # sqrt(r2 + 1e-12) as contrib.gp: a finite gradient at r = 0 (the diagonal)
    r = (r2 + 1e-12).sqrt()
    return (1 + _SQRT5 * r + 5.0 / 3.0 * r2) * torch.exp(-_SQRT5 * r)


KERNELS: dict[str, Callable[[Tensor], Tensor]] = {
    "rbf": lambda r2: torch.exp(-0.5 * r2),  # squared exponential
    "matern52": _matern52,
}


# --------------------------------------------------------------------------------------------
# Kernels, priors and the chain-rule Gaussian
# --------------------------------------------------------------------------------------------


def covariance(x: Tensor, z: Tensor, lengthscale, amplitude, kernel: str = "rbf") -> Tensor:
    """k(x_i, z_j) = amplitude² g(|x_i - z_j|² / lengthscale²) with g(r²) = exp(-r²/2) ("rbf")
    or (1 + √5 r + 5r²/3) exp(-√5 r) ("matern52"); x (N,), z (M,), hyperparameters () or
    (..., 1); returns (..., N, M)."""
    lengthscale = torch.as_tensor(lengthscale, dtype=x.dtype, device=x.device)
    amplitude = torch.as_tensor(amplitude, dtype=x.dtype, device=x.device)
    r2 = (x.unsqueeze(-1) - z.unsqueeze(-2)) ** 2 / lengthscale.unsqueeze(-1) ** 2
    return amplitude.unsqueeze(-1) ** 2 * KERNELS[kernel](r2)


def _diagonal(value, n: int, dtype: torch.dtype, device) -> Tensor:
    """value (() or (..., 1)) times the n x n identity: (..., n, n)."""
    value = torch.as_tensor(value, dtype=dtype, device=device)
    return value.unsqueeze(-1) * torch.eye(n, dtype=dtype, device=device)


def lengthscale_prior(lower: float, upper: float, tail: float = 0.01) -> tuple[float, float]:
    """(concentration, rate) of the InverseGamma with P(l < lower) = P(l > upper) = tail.

    Betancourt (2017): lengthscales below the inputs' spacing or beyond their range are not
    informed by the data, so the prior puts little mass there and the inverse gamma's light left
    tail keeps the GP from interpolating noise. P(l < x) = Q(a, b/x), the regularised upper
    incomplete gamma, so b = lower · Q⁻¹(a, tail), and a solves the upper tail (Brent).
    """
    from scipy import optimize, special

    if not 0 < lower < upper:
        raise ZooError(f"lengthscale_prior: need 0 < lower < upper, got lower={lower}, "
                       f"upper={upper}")
    if not 0 < tail < 0.5:
        raise ZooError(f"lengthscale_prior: tail={tail} must lie in (0, 0.5)")

    def rate(a: float) -> float:
        return lower * special.gammainccinv(a, tail)

    def upper_tail_excess(log_a: float) -> float:  # decreasing in a: more mass, less spread
        a = math.exp(log_a)
        return special.gammainc(a, rate(a) / upper) - tail

    log_a = optimize.brentq(upper_tail_excess, math.log(1e-3), math.log(1e5), xtol=1e-14)
    return math.exp(log_a), float(rate(math.exp(log_a)))


def _hyperparameters(concentration: float, rate: float, amplitude_scale: float,
                     sigma_scale: float) -> tuple[Tensor, Tensor, Tensor]:
    lengthscale = pyro.sample("lengthscale", dist.InverseGamma(float(concentration), float(rate)))
    amplitude = pyro.sample("amplitude", dist.HalfNormal(float(amplitude_scale)))
    sigma = pyro.sample("sigma", dist.HalfNormal(float(sigma_scale)))
    return lengthscale, amplitude, sigma


def cholesky(matrix: Tensor) -> Tensor:
    """Cholesky factor, NaN (not an exception) for a batch element that is not positive definite:
    one chain that wanders off must be rejected by its sampler, not stop all the others."""
    factor, info = torch.linalg.cholesky_ex(matrix)
    return torch.where((info > 0).unsqueeze(-1).unsqueeze(-1), math.nan, factor)


class ChainRuleMultivariateNormal(TorchDistribution):
    """y ~ MultivariateNormal(0, L Lᵀ) over the last batch dimension, scored factor by factor.

    ``log_prob`` returns the N chain-rule factors log p(y_i | y_1..y_{i-1}) instead of their
    sum: with z = L⁻¹ y they are -z_i²/2 - log L_ii - log(2π)/2, and they add up to the joint
    log density exactly. So the data plate gives the zoo a pointwise log-likelihood (for sorted
    inputs, one-step-ahead predictive densities) while the joint density stays the MVN's. The
    coordinates are *not* independent: never subsample this plate.
    """

    arg_constraints: dict = {}  # a NaN factor (see ``cholesky``) must score NaN, not raise
    support = constraints.real
    has_rsample = True

    def __init__(self, scale_tril: Tensor):
        self.scale_tril = scale_tril
        super().__init__(scale_tril.shape[:-1], torch.Size(), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.scale_tril = self.scale_tril.expand(batch_shape + self.scale_tril.shape[-1:])
        TorchDistribution.__init__(new, batch_shape, torch.Size(), validate_args=False)
        return new

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        eps = torch.randn(self._extended_shape(sample_shape), dtype=self.scale_tril.dtype,
                          device=self.scale_tril.device)
        return (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, value: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        scale_tril = self.scale_tril.expand(shape + self.scale_tril.shape[-1:])
        z = torch.linalg.solve_triangular(scale_tril, value.expand(shape).unsqueeze(-1),
                                          upper=False).squeeze(-1)
        return _normal_factors(z, scale_tril)


def _normal_factors(z: Tensor, scale_tril: Tensor) -> Tensor:
    """log N(y_i | y_<i) from whitened residuals z = L⁻¹(y - mean): -z²/2 - log L_ii - ½log 2π."""
    return -0.5 * z**2 - scale_tril.diagonal(dim1=-2, dim2=-1).log() - 0.5 * math.log(2 * math.pi)


class ChainRuleLowRankMultivariateNormal(TorchDistribution):
    """y ~ MultivariateNormal(0, W Wᵀ + diag(D)), W (..., N, M), scored by chain-rule factors
    log p(y_i | y_<i) like ``ChainRuleMultivariateNormal``, in O(N M²) rather than O(N³).

    y = W v + e with v ~ N(0, I_M) and e ~ N(0, D): the data are taken in blocks of
    b = max(M, 64); the precision of v given the earlier blocks is P = I + Σ_j w_j w_jᵀ / D_j
    and its shift h = Σ_j w_j y_j / D_j, so the next block is N(W_b P⁻¹ h, W_b P⁻¹ W_bᵀ +
    diag(D_b)), whose own Cholesky factor gives that block's chain-rule factors: O(b³ + M³)
    per block, N/b blocks. (With N <= 64 that is one dense Cholesky: cheaper than the loop.)
    """

    arg_constraints: dict = {}
    support = constraints.real
    has_rsample = True

    def __init__(self, cov_factor: Tensor, cov_diag: Tensor):
        batch_shape = torch.broadcast_shapes(cov_factor.shape[:-1], cov_diag.shape)
        self.cov_factor = cov_factor.expand(batch_shape + cov_factor.shape[-1:])
        self.cov_diag = cov_diag.expand(batch_shape)
        super().__init__(batch_shape, torch.Size(), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        new.cov_factor = self.cov_factor.expand(batch_shape + self.cov_factor.shape[-1:])
        new.cov_diag = self.cov_diag.expand(batch_shape)
        TorchDistribution.__init__(new, batch_shape, torch.Size(), validate_args=False)
        return new

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        w = self.cov_factor
        v = torch.randn(shape[:-1] + w.shape[-1:], dtype=w.dtype, device=w.device)
        eps = torch.randn(shape, dtype=w.dtype, device=w.device)
        return (w @ v.unsqueeze(-1)).squeeze(-1) + self.cov_diag.sqrt() * eps

    def log_prob(self, value: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(value.shape, self.batch_shape)
        w = self.cov_factor.expand(shape + self.cov_factor.shape[-1:])
        d, y = self.cov_diag.expand(shape), value.expand(shape)
        num_data, rank = w.shape[-2:]
        factors, block = [], max(rank, MIN_BLOCK)
        eye = torch.eye(max(rank, min(block, num_data)), dtype=w.dtype, device=w.device)
        precision = eye[:rank, :rank].expand(shape[:-1] + (rank, rank))
        shift = w.new_zeros(shape[:-1] + (rank, 1))
        for start in range(0, num_data, block):  # a Python loop over N / b blocks
            wb, db, yb = (t[..., start:start + block, :]
                          for t in (w, d.unsqueeze(-1), y.unsqueeze(-1)))
            if start == 0:  # P = I, h = 0: the first block is N(0, W_b W_bᵀ + diag(D_b))
                g, residual = wb.transpose(-1, -2), yb
            else:
                lp = cholesky(precision)
                g = torch.linalg.solve_triangular(lp, wb.transpose(-1, -2), upper=False)
                s = torch.linalg.solve_triangular(lp, shift, upper=False)
                residual = yb - g.transpose(-1, -2) @ s
            lb = cholesky(g.transpose(-1, -2) @ g + db * eye[:wb.shape[-2], :wb.shape[-2]])
            z = torch.linalg.solve_triangular(lb, residual, upper=False)
            factors.append(_normal_factors(z.squeeze(-1), lb))
            if start + block < num_data:
                wb_d = wb / db
                precision = precision + wb_d.transpose(-1, -2) @ wb
                shift = shift + wb_d.transpose(-1, -2) @ yb
        return torch.cat(factors, dim=-1)


def _check_options(kernel: str, approx: str | None = None) -> None:
    if kernel not in KERNELS:
        raise unknown("GP kernel", kernel, KERNELS)
    if approx is not None and approx not in APPROXIMATIONS:
        raise unknown("sparse GP approximation", approx, APPROXIMATIONS)


# --------------------------------------------------------------------------------------------
# The exact GP
# --------------------------------------------------------------------------------------------


def gp_scale_tril(x: Tensor, lengthscale, amplitude, sigma, kernel: str = "rbf",
                  jitter: float = JITTER) -> Tensor:
    """Cholesky factor of K(x, x) + (sigma² + jitter) I, batched over the hyperparameters."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    cov = covariance(x, x, lengthscale, amplitude, kernel)
    return cholesky(cov + _diagonal(sigma**2 + jitter, x.shape[-1], x.dtype, x.device))


def gp_log_marginal(x: Tensor, y: Tensor, lengthscale, amplitude, sigma, kernel: str = "rbf",
                    jitter: float = JITTER) -> Tensor:
    """log p(y | θ) = log N(y | 0, K + (sigma² + jitter) I), as contrib.gp's GPRegression."""
    scale_tril = gp_scale_tril(x, lengthscale, amplitude, sigma, kernel, jitter)
    return dist.MultivariateNormal(torch.zeros_like(y), scale_tril=scale_tril).log_prob(y)


@register_model(
    observed=("y",),
    data_shapes={"x": ("N",), "y": ("N",)},
    default_dataset="gp_synthetic",
    references=REFERENCES,
)
def gp_regression(
    x: Tensor,
    y: Tensor | None = None,
    kernel: str = "rbf",
    lengthscale_concentration: float = LENGTHSCALE_CONCENTRATION,
    lengthscale_rate: float = LENGTHSCALE_RATE,
    amplitude_scale: float = AMPLITUDE_SCALE,
    sigma_scale: float = SIGMA_SCALE,
    jitter: float = JITTER,
):
    """Exact GP regression on 1-D inputs with the latent function marginalised out.

    lengthscale ~ InverseGamma(lengthscale_concentration, lengthscale_rate)
    amplitude ~ HalfNormal(amplitude_scale);  sigma ~ HalfNormal(sigma_scale)
    f ~ GP(0, k),  k(x, x') = amplitude² exp(-|x - x'|² / (2 lengthscale²))  (kernel="rbf";
        "matern52" for Matern-5/2)
    y ~ MultivariateNormal(0, K + (sigma² + jitter) I),  K[i, j] = k(x[i], x[j])  (f integrated)
    The pointwise log-likelihood is the chain-rule factorisation log p(y[i] | y[:i]) (it sums to
    the MVN log density). Predictions at new inputs: ``gp_predict(fit, x_new)``; ``Fit.predict``
    instead draws a fresh function from the GP at the posterior hyperparameters (f is
    integrated out, so it is not conditioned on y).
    """
    _check_options(kernel)
    lengthscale, amplitude, sigma = _hyperparameters(
        lengthscale_concentration, lengthscale_rate, amplitude_scale, sigma_scale)
    scale_tril = gp_scale_tril(x, lengthscale, amplitude, sigma, kernel, jitter)
    with pyro.plate("data", x.shape[-1], dim=-1):
        return pyro.sample("y", ChainRuleMultivariateNormal(scale_tril), obs=y)



@register_model(
    observed=("y",),
    data_shapes={"x": ("N",), "y": ("N",)},
    default_dataset="posteriordb",
    posteriordb=("gp_pois_regr-gp_regr",),
    references=(
        "Magnusson, Torgander, Bürkner, Zhang, Carpenter & Vehtari (2024), posteriordb: testing, "
        "benchmarking and developing Bayesian inference algorithms, arXiv:2407.04967 (model "
        "gp_regr, posterior gp_pois_regr-gp_regr)",
    ) + REFERENCES[:1],
)
def gp_regr(x: Tensor, y: Tensor | None = None, N: int | None = None, k: Tensor | None = None):
    """posteriordb's gp_regr: exact GP regression whose noise adds sigma (not sigma²) to K.

    rho ~ Gamma(25, 4);  alpha ~ HalfNormal(2);  sigma ~ HalfNormal(1)
    y ~ MultivariateNormal(0, K + sigma I),  K[i, j] = alpha² exp(-(x[i] - x[j])² / (2 rho²))
    as the Stan program writes it (``diag_matrix(rep_vector(sigma, N))``); ``k`` (counts of
    the data set's Poisson variant) is not used.
    """
    rho = pyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = pyro.sample("alpha", dist.HalfNormal(2.0))
    sigma = pyro.sample("sigma", dist.HalfNormal(1.0))
    cov = covariance(x, x, rho, alpha)  # under S draws the hyperparameters are (S, 1)
    scale_tril = cholesky(cov + _diagonal(sigma, x.shape[-1], x.dtype, x.device))
    with pyro.plate("data", x.shape[-1], dim=-1):
        return pyro.sample("y", ChainRuleMultivariateNormal(scale_tril), obs=y)

# --------------------------------------------------------------------------------------------
# The sparse GP
# --------------------------------------------------------------------------------------------


def inducing_grid(x: Tensor, inducing_points: Tensor | None = None,
                  num_inducing: int = NUM_INDUCING) -> Tensor:
    """The inducing inputs: ``inducing_points`` if given, else ``num_inducing`` evenly spaced
    points spanning the range of x (fixed, not learned)."""
    if inducing_points is not None:
        if inducing_points.dim() != 1 or inducing_points.numel() < 1:
            raise ZooError(f"inducing_points must be a non-empty 1-D array, got shape "
                           f"{tuple(inducing_points.shape)}")
        return inducing_points.to(dtype=x.dtype, device=x.device)
    if isinstance(num_inducing, bool) or not isinstance(num_inducing, int) or num_inducing < 1:
        raise ZooError(f"num_inducing={num_inducing!r} must be an integer >= 1")
    return torch.linspace(float(x.min()), float(x.max()), num_inducing, dtype=x.dtype,
                          device=x.device)


def sparse_pieces(x: Tensor, xu: Tensor, lengthscale, amplitude, kernel: str = "rbf",
                  jitter: float = JITTER) -> tuple[Tensor, Tensor, Tensor]:
    """(Luu, A, gap): Luu = chol(Kuu + jitter I), A = Luu⁻¹ Kuf (..., M, N), so that
    Q_ff = Aᵀ A, and gap = diag(K_ff - Q_ff) >= 0 (..., N)."""
    kuu = covariance(xu, xu, lengthscale, amplitude, kernel)
    luu = cholesky(kuu + _diagonal(jitter, xu.shape[-1], x.dtype, x.device))
    a = torch.linalg.solve_triangular(luu, covariance(xu, x, lengthscale, amplitude, kernel),
                                      upper=False)
    # stationary kernels: k(x, x) = amplitude²
    kff_diag = torch.as_tensor(amplitude, dtype=x.dtype, device=x.device) ** 2
    return luu, a, (kff_diag - a.pow(2).sum(-2)).clamp(min=0)


def _sparse_noise(sigma, gap: Tensor, approx: str) -> Tensor:
    """The likelihood variance per point: sigma² (DTC, VFE) or sigma² + gap (FITC)."""
    noise = torch.as_tensor(sigma, dtype=gap.dtype, device=gap.device) ** 2
    return noise + gap if approx == "FITC" else noise.expand(gap.shape)


def sparse_gp_log_marginal(x: Tensor, y: Tensor, lengthscale, amplitude, sigma,
                           inducing_points: Tensor, approx: str = "VFE", kernel: str = "rbf",
                           jitter: float = JITTER) -> Tensor:
    """The collapsed sparse log density, as contrib.gp's SparseGPRegression computes it:

    log N(y | 0, Q_ff + D) - [VFE only] tr(K_ff - Q_ff) / (2 sigma²),
    D = sigma² I (DTC, VFE) or sigma² I + diag(K_ff - Q_ff) (FITC). For VFE it is Titsias'
    lower bound on ``gp_log_marginal``; with inducing_points = x (and no jitter) all three
    equal it.
    """
    _check_options(kernel, approx)
    _, a, gap = sparse_pieces(x, inducing_points, lengthscale, amplitude, kernel, jitter)
    noise = _sparse_noise(sigma, gap, approx)
    log_p = dist.LowRankMultivariateNormal(torch.zeros_like(noise), a.transpose(-1, -2),
                                           noise).log_prob(y)
    if approx == "VFE":
        log_p = log_p - (gap / (2 * torch.as_tensor(sigma, dtype=y.dtype) ** 2)).sum(-1)
    return log_p


@register_model(
    observed=("y",),
    data_shapes={"x": ("N",), "y": ("N",)},  # inducing_points (M,): checked by inducing_grid
    default_dataset="gp_synthetic",
    references=SPARSE_REFERENCES,
)
def sparse_gp_regression(
    x: Tensor,
    y: Tensor | None = None,
    inducing_points: Tensor | None = None,
    num_inducing: int = NUM_INDUCING,
    approx: str = "VFE",
    kernel: str = "rbf",
    lengthscale_concentration: float = LENGTHSCALE_CONCENTRATION,
    lengthscale_rate: float = LENGTHSCALE_RATE,
    amplitude_scale: float = AMPLITUDE_SCALE,
    sigma_scale: float = SIGMA_SCALE,
    jitter: float = JITTER,
):
    """Sparse GP regression with M inducing points at fixed locations (VFE by default).

    lengthscale, amplitude, sigma: the priors of gp_regression
    Xu = inducing_points, default num_inducing points evenly spaced over the range of x
    Q_ff = K(x, Xu) (K(Xu, Xu) + jitter I)⁻¹ K(Xu, x)  (Nystrom: rank M)
    y ~ MultivariateNormal(0, Q_ff + D),  D = sigma² I (DTC, VFE) or
        sigma² I + diag(K_ff - Q_ff) (FITC);  f and the inducing values are integrated out
    VFE adds the factor -tr(K_ff - Q_ff) / (2 sigma²) (Titsias' trace term), one term per point.
    This is contrib.gp's SparseGPRegression density (``sparse_gp_log_marginal``), evaluated in
    O(N M²) as chain-rule factors (the pointwise log-likelihood; see gp_regression).
    VFE by default: its density is a lower bound on the exact GP's marginal likelihood at every
    hyperparameter, equal to it when the inducing points are the inputs and close when they
    are denser than the lengthscale, so the hyperparameter posterior approximates the exact
    GP's; DTC and FITC change the model instead (FITC tends to underfit the noise, Bauer et al.
    2016). Inducing points are fixed, not learned: MCMC then samples only the three
    hyperparameters. DTC and FITC are generative models; VFE simulates y from DTC.
    """
    _check_options(kernel, approx)
    xu = inducing_grid(x, inducing_points, num_inducing)
    lengthscale, amplitude, sigma = _hyperparameters(
        lengthscale_concentration, lengthscale_rate, amplitude_scale, sigma_scale)
    _, a, gap = sparse_pieces(x, xu, lengthscale, amplitude, kernel, jitter)
    noise = _sparse_noise(sigma, gap, approx)
    with pyro.plate("data", x.shape[-1], dim=-1):
        if approx == "VFE":
            pyro.factor("trace_term", -gap / (2 * sigma**2))
        return pyro.sample("y", ChainRuleLowRankMultivariateNormal(a.transpose(-1, -2), noise),
                           obs=y)


# --------------------------------------------------------------------------------------------
# Prediction at new inputs
# --------------------------------------------------------------------------------------------

_GP_MODELS = ("gp_regression", "sparse_gp_regression")
_HYPERPARAMETERS = ("lengthscale", "amplitude", "sigma")


def _arguments(model: str, data: Mapping[str, Any]) -> dict:
    fn = {"gp_regression": gp_regression, "sparse_gp_regression": sparse_gp_regression}[model]
    bound = inspect.signature(fn).bind(**data)
    bound.apply_defaults()
    return bound.arguments


def _exact_conditional(args: dict, theta: dict, x_new: Tensor) -> tuple[Tensor, Tensor]:
    """Rasmussen & Williams eq. 2.25-2.26 with Σ = K + (sigma² + jitter) I = L Lᵀ:
    mean = K*ᵀ Σ⁻¹ y = (L⁻¹K*)ᵀ L⁻¹y, var = k** - |L⁻¹ K*|² per column."""
    x, y, kernel = args["x"], args["y"], args["kernel"]
    scale_tril = gp_scale_tril(x, theta["lengthscale"], theta["amplitude"], theta["sigma"],
                               kernel, args["jitter"])
    cross = covariance(x, x_new, theta["lengthscale"], theta["amplitude"], kernel)
    v = torch.linalg.solve_triangular(scale_tril, cross, upper=False)  # (S, N, N*)
    z = torch.linalg.solve_triangular(scale_tril, y.expand(v.shape[:-2] + y.shape).unsqueeze(-1),
                                      upper=False)
    mean = (v * z).sum(-2)
    return mean, theta["amplitude"] ** 2 - v.pow(2).sum(-2)


def _sparse_conditional(args: dict, theta: dict, x_new: Tensor) -> tuple[Tensor, Tensor]:
    """contrib.gp's SparseGPRegression.forward, batched: with A = Luu⁻¹ Kuf,
    B = I + A D⁻¹ Aᵀ = L Lᵀ and As = Luu⁻¹ Kus, mean = (L⁻¹ A D⁻¹ y)ᵀ L⁻¹ As and
    var = k** - |As|² + |L⁻¹ As|² per column (q(u) integrated analytically)."""
    x, y, kernel, approx = args["x"], args["y"], args["kernel"], args["approx"]
    xu = inducing_grid(x, args["inducing_points"], args["num_inducing"])
    luu, a, gap = sparse_pieces(x, xu, theta["lengthscale"], theta["amplitude"], kernel,
                                args["jitter"])
    noise = _sparse_noise(theta["sigma"], gap, approx)
    a_dinv = a / noise.unsqueeze(-2)
    b = a_dinv @ a.transpose(-1, -2) + torch.eye(xu.shape[-1], dtype=x.dtype, device=x.device)
    lb = cholesky(b)
    a_s = torch.linalg.solve_triangular(
        luu, covariance(xu, x_new, theta["lengthscale"], theta["amplitude"], kernel), upper=False)
    c = torch.linalg.solve_triangular(lb, (a_dinv @ y.unsqueeze(-1)), upper=False)  # (S, M, 1)
    lb_as = torch.linalg.solve_triangular(lb, a_s, upper=False)
    mean = (c * lb_as).sum(-2)
    var = theta["amplitude"] ** 2 - a_s.pow(2).sum(-2) + lb_as.pow(2).sum(-2)
    return mean, var


def gp_conditional(model: str, data: Mapping[str, Any], draws: Mapping[str, Tensor], x_new,
                   noiseless: bool = True, dtype: torch.dtype = torch.float64
                   ) -> tuple[Tensor, Tensor]:
    """The GP posterior of f(x_new) (or of y at x_new with ``noiseless=False``) given each of S
    hyperparameter draws: (mean, var), each (S, len(x_new)).

    ``data`` holds the model's arguments (x, y and any options); ``draws`` maps lengthscale,
    amplitude and sigma to (S,) tensors. Exact for gp_regression; the sparse predictive of the
    chosen approximation for sparse_gp_regression.
    """
    if model not in _GP_MODELS:
        raise unknown("GP model", model, _GP_MODELS)
    args = _arguments(model, prepare(get_model(model), data, dtype))
    _check_options(args["kernel"], args.get("approx"))
    x = args["x"]
    x_new = to_tensor("x_new", x_new, x.dtype)
    if x_new.dim() != 1:
        raise ZooError(f"x_new must be 1-D (the models take 1-D inputs), got shape "
                       f"{tuple(x_new.shape)}")
    missing = [k for k in _HYPERPARAMETERS if k not in draws]
    if missing:
        raise ZooError(f"gp_conditional: draws lack {', '.join(map(repr, missing))}")
    theta = {k: torch.as_tensor(draws[k], dtype=x.dtype).reshape(-1, 1) for k in _HYPERPARAMETERS}
    conditional = _exact_conditional if model == "gp_regression" else _sparse_conditional
    # Chunks of draws keep the (S, N, N*) intermediates to ~2e7 numbers.
    step = max(1, int(2e7 // (x.shape[-1] * max(x.shape[-1], x_new.shape[-1], 1))))
    means, variances = [], []
    for start in range(0, theta["sigma"].shape[0], step):
        part = {k: v[start:start + step] for k, v in theta.items()}
        mean, var = conditional(args, part, x_new)
        var = var.clamp(min=0)  # k** - Q** >= 0 in exact arithmetic
        means.append(mean)
        variances.append(var if noiseless else var + part["sigma"] ** 2)
    mean, var = torch.cat(means), torch.cat(variances)
    if not (torch.isfinite(mean).all() and torch.isfinite(var).all()):
        raise ZooError(f"gp_conditional: a draw's covariance is not positive definite "
                       f"(hyperparameters too extreme for jitter={args['jitter']})")
    return mean, var


def gp_predict(fit, x_new, noiseless: bool = True) -> tuple[Tensor, Tensor]:
    """Posterior predictive mean and variance of f(x_new) (y with ``noiseless=False``) from a
    fit of gp_regression or sparse_gp_regression, averaging the GP conditional over the fit's
    hyperparameter draws (law of total variance):

    mean = E_θ[m_θ(x*)],  var = E_θ[v_θ(x*)] + Var_θ[m_θ(x*)].
    """
    name = getattr(getattr(fit, "spec", None), "name", None)
    if name not in _GP_MODELS:
        raise ZooError(f"gp_predict needs a fit of {' or '.join(_GP_MODELS)}, got "
                       f"{name or type(fit).__name__!r}")
    draws = fit.draws(list(_HYPERPARAMETERS))
    mean, var = gp_conditional(name, fit.data, draws, x_new, noiseless, fit.dtype)
    return mean.mean(0), var.mean(0) + mean.var(0, unbiased=False)
