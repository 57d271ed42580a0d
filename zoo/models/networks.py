"""Bayesian neural networks: ``bnn_mlp``, a one-hidden-layer ReLU MLP with Gaussian weights,
and its mean-field Gaussian guide (Bayes by backprop, Blundell et al. 2015).

Everything the two training paths share lives here, so that they optimise one ELBO:

- the variational parameters, by name and shape (``param_shapes``) and their initialisation
  (``init_param``): a Normal q(w) = N(μ, σ²) per weight with σ = softplus(ρ), μ initialised like
  a PyTorch ``nn.Linear`` (U(−1/√fan_in, 1/√fan_in), biases included) and ρ = ``RHO_INIT`` = −5,
  i.e. σ₀ = log(1 + e⁻⁵) ≈ 6.7e-3: small, so training starts close to a deterministic network
  whose first steps fit the data instead of fighting the noise of wide weights, and the KL
  term then widens every σ the data do not pin down;
- q(τ) = Gamma(α, β) for the noise precision τ = 1/σ², α = exp(``tau.log_shape``),
  β = exp(``tau.log_rate``), initialised at α₀ = 10 with E[τ] = α/β = 1/Var(y): an untrained
  network's residual variance is that of y;
- the closed-form KL divergences (``kl_normal``, ``kl_gamma``) and the network (``forward``).

Pyro's ``TraceMeanField_ELBO`` (``zoo.fit(..., method="svi", guide="model", elbo="meanfield")``)
uses the same closed forms through ``kl_divergence`` of the guide's and the model's sites;
``zoo.bdl.bbb`` trains the same parameters in plain torch with local reparameterisation. No
``pyro.deterministic`` site is recorded: a ``Fit`` stores every deterministic site for every
draw and data point, and the per-point means or logits are recomputed from the weight draws
on demand by ``predictive`` instead.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ZooError, unknown
from ..registry import register_dataset, register_model
from ..uncertainty import ClassificationPredictive, RegressionPredictive

BLUNDELL = (
    "Blundell, Cornebise, Kavukcuoglu & Wierstra (2015), Weight uncertainty in neural "
    "networks, ICML (Bayes by backprop)"
)
KINGMA_LRT = (
    "Kingma, Salimans & Welling (2015), Variational dropout and the local reparameterization "
    "trick, NeurIPS"
)
HERNANDEZ_LOBATO = (
    "Hernández-Lobato & Adams (2015), Probabilistic backpropagation for scalable learning of "
    "Bayesian neural networks, ICML (Gamma prior on the noise precision; UCI protocol)"
)
FOONG = (
    "Foong, Li, Hernández-Lobato & Turner (2019), 'In-between' uncertainty in Bayesian neural "
    "networks, ICML 2019 UDL workshop (mean-field single-hidden-layer limits)"
)

TASKS = ("regression", "classification")
PREFIX = "bnn_mlp."  # of the guide's names in Pyro's param store
RHO_INIT = -5.0  # softplus(-5) = 6.7e-3: the initial posterior sd of every weight
TAU_SHAPE_INIT = 10.0  # q(tau)'s initial shape: mean 1/Var(y), coefficient of variation 0.32
NOISE_SHAPE = 1.0  # tau ~ Gamma(1, 0.01): see bnn_mlp's docstring
NOISE_RATE = 0.01
LAYERS = ("W1", "b1", "W2", "b2")  # the weight sites, in the model's order


# --------------------------------------------------------------------------------------------
# Shapes, initialisation and closed forms, shared with zoo.bdl.bbb
# --------------------------------------------------------------------------------------------


def out_dim(task: str, num_classes: int) -> int:
    """Width of the output layer: 1 for regression, K logits for classification."""
    if task not in TASKS:
        raise unknown("task", task, TASKS)
    if task == "classification" and int(num_classes) < 2:
        raise ZooError(f"bnn_mlp: num_classes={num_classes} must be >= 2")
    return 1 if task == "regression" else int(num_classes)


def layer_shapes(in_dim: int, hidden: int, out: int) -> dict[str, tuple[int, ...]]:
    """Weight site -> shape. W1 is (hidden, in) like ``nn.Linear.weight``, so the hidden plate
    is its first dimension; W2 is (hidden, out) for the same reason."""
    return {"W1": (hidden, in_dim), "b1": (hidden,), "W2": (hidden, out), "b2": (out,)}


def fan_in(site: str, in_dim: int, hidden: int) -> int:
    return in_dim if site in ("W1", "b1") else hidden


def layer_prior_scales(prior_scale: float | Sequence[float] | Tensor) -> tuple[float, float]:
    """(input-layer, output-layer) prior sd from one number or one per layer; biases share their
    layer's scale."""
    # Python numbers stay Python numbers (a tensor made and read back here would be frozen into
    # a JIT trace, with a warning that makes zoo refuse the JIT path).
    if isinstance(prior_scale, (int, float)):
        values = [float(prior_scale)]
    else:
        values = torch.as_tensor(prior_scale, dtype=torch.float64).reshape(-1).tolist()
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(v > 0 and math.isfinite(v) for v in values):
        raise ZooError(f"bnn_mlp: prior_scale={prior_scale!r} must be one positive number or "
                       "one per layer (two)")
    return float(values[0]), float(values[1])


def param_shapes(in_dim: int, hidden: int, out: int, learn_noise: bool) -> dict[str, tuple]:
    """Every variational parameter (name without the param-store prefix) and its shape."""
    shapes: dict[str, tuple] = {}
    for site, shape in layer_shapes(in_dim, hidden, out).items():
        shapes[f"{site}.loc"] = shape
        shapes[f"{site}.rho"] = shape
    if learn_noise:
        shapes["tau.log_shape"] = ()
        shapes["tau.log_rate"] = ()
    return shapes


def init_param(name: str, shape: tuple, in_dim: int, hidden: int, y_var: float = 1.0,
               dtype: torch.dtype | None = None, device: torch.device | None = None,
               generator: torch.Generator | None = None) -> Tensor:
    """The initial value of parameter ``name`` (see the module docstring)."""
    kw: dict[str, Any] = {"dtype": dtype, "device": device}
    site, kind = name.split(".")
    if kind == "loc":
        bound = 1.0 / math.sqrt(fan_in(site, in_dim, hidden))
        return (torch.rand(shape, generator=generator, **kw) * 2 - 1) * bound
    if kind == "rho":
        return torch.full(shape, RHO_INIT, **kw)
    if kind == "log_shape":
        return torch.full(shape, math.log(TAU_SHAPE_INIT), **kw)
    # log_rate: E[tau] = shape / rate = 1 / Var(y)
    return torch.full(shape, math.log(TAU_SHAPE_INIT * max(float(y_var), 1e-12)), **kw)


def kl_normal(loc: Tensor, scale: Tensor, prior_scale: float | Tensor) -> Tensor:
    """Elementwise KL(N(μ, σ²) ‖ N(0, s²)) = log(s/σ) + (σ² + μ²) / (2 s²) − 1/2."""
    s2 = torch.as_tensor(prior_scale, dtype=loc.dtype, device=loc.device) ** 2
    return 0.5 * torch.log(s2) - torch.log(scale) + (scale**2 + loc**2) / (2 * s2) - 0.5


def kl_gamma(shape: Tensor, rate: Tensor, prior_shape: float, prior_rate: float) -> Tensor:
    """KL(Gamma(α, β) ‖ Gamma(a, b)) = (α − a) ψ(α) − log Γ(α) + log Γ(a)
    + a (log β − log b) + α (b − β) / β  (rates, not scales)."""
    a = torch.as_tensor(prior_shape, dtype=shape.dtype, device=shape.device)
    b = torch.as_tensor(prior_rate, dtype=shape.dtype, device=shape.device)
    return ((shape - a) * torch.digamma(shape) - torch.lgamma(shape) + torch.lgamma(a)
            + a * (torch.log(rate) - torch.log(b)) + shape * (b - rate) / rate)


def forward(x: Tensor, W1: Tensor, b1: Tensor, W2: Tensor, b2: Tensor) -> Tensor:
    """The network's output, (..., N, out): relu(x W1ᵀ + b1) W2 + b2.

    For one set of weights (W1 (H, D), b1 (H,), W2 (H, O), b2 (O,)) or for draws of them with
    any leading dims (W1 (..., H, D), b1 (..., H), W2 (..., H, O), b2 (..., O)), which is how
    Pyro lays out the sites (all in plates) under an outer plate of draws or particles. The
    biases get a row dim so they broadcast over the N rows."""
    hidden = torch.relu(x @ W1.transpose(-1, -2) + b1.unsqueeze(-2))
    return hidden @ W2 + b2.unsqueeze(-2)


# --------------------------------------------------------------------------------------------
# The model and its guide
# --------------------------------------------------------------------------------------------


def _learn_noise(task: str, noise_sd: float | None) -> bool:
    return task == "regression" and noise_sd is None


def bnn_mlp_guide(
    x: Tensor,
    y: Tensor | None = None,
    task: str = "regression",
    hidden: int = 50,
    num_classes: int = 2,
    prior_scale: float | Sequence[float] = 1.0,
    noise_sd: float | None = None,
    noise_shape: float = NOISE_SHAPE,
    noise_rate: float = NOISE_RATE,
    subsample_size: int | None = None,
):
    """Mean-field guide of ``bnn_mlp``: q(w) = N(μ, softplus(ρ)²) per weight, q(tau) = Gamma.

    Parameters live in Pyro's param store as ``bnn_mlp.<site>.loc`` / ``.rho`` and
    ``bnn_mlp.tau.log_shape`` / ``.log_rate`` (``zoo.bdl.bbb.BBBFit.to_param_store`` loads a
    plain-torch fit there). The guide has no data plate: every latent is global.
    """
    in_dim = x.shape[-1]
    hidden = int(hidden)
    out = out_dim(task, num_classes)
    learn_noise = _learn_noise(task, noise_sd)

    def init(name: str, shape: tuple) -> Tensor:
        # Runs once, when the parameter is created (eagerly, also under Pyro's JIT ELBO), so
        # reading y's variance into a Python number here freezes nothing in a trace.
        y_var = float(y.var()) if y is not None and len(y) > 1 else 1.0
        return init_param(name, shape, in_dim, hidden, y_var, dtype=x.dtype, device=x.device)

    def param(name: str, shape: tuple) -> Tensor:
        return pyro.param(PREFIX + name, lambda: init(name, shape))

    q = {n: param(n, s) for n, s in param_shapes(in_dim, hidden, out, learn_noise).items()}

    def normal(site: str) -> dist.Normal:
        return dist.Normal(q[f"{site}.loc"], F.softplus(q[f"{site}.rho"]))

    with pyro.plate("hidden", hidden, dim=-1):
        pyro.sample("W1", normal("W1").to_event(1))
        pyro.sample("b1", normal("b1"))
        pyro.sample("W2", normal("W2").to_event(1))
    with pyro.plate("outputs", out, dim=-1):
        pyro.sample("b2", normal("b2"))
    if learn_noise:
        pyro.sample("tau", dist.Gamma(q["tau.log_shape"].exp(), q["tau.log_rate"].exp()))


# Methods: SVI is what the model is for. NUTS and chees are the reference for small BNNs
# (full-batch HMC, Neal 1996; Izmailov et al. 2021) and run at smoke size in ~20 s each; their
# R-hat honestly reports the symmetric modes a network's posterior has. No Laplace: the log
# density of a ReLU network is not twice differentiable, and a trained mode puts hidden units'
# kinks on data points, where zoo's Hessian (differenced gradients) sees spurious negative
# curvature (measured on toy_regression_1d: eigenvalues -1.8e3 to -9.8e4 along a unit's
# (W1, b1)); a network Laplace needs the generalised Gauss-Newton (zoo.bdl), not this one.
@register_model(
    methods=("chees", "nuts", "svi"),
    observed=("y",),
    data_shapes={"x": ("N", "D"), "y": ("N",)},
    default_dataset="toy_regression_1d",
    references=(BLUNDELL, KINGMA_LRT, HERNANDEZ_LOBATO, FOONG),
    guide=bnn_mlp_guide,
)
def bnn_mlp(
    x: Tensor,
    y: Tensor | None = None,
    task: str = "regression",
    hidden: int = 50,
    num_classes: int = 2,
    prior_scale: float | Sequence[float] = 1.0,
    noise_sd: float | None = None,
    noise_shape: float = NOISE_SHAPE,
    noise_rate: float = NOISE_RATE,
    subsample_size: int | None = None,
):
    """A Bayesian one-hidden-layer ReLU network (Bayes by backprop's model).

    W1[h, d], b1[h] ~ Normal(0, s1);  W2[h, k], b2[k] ~ Normal(0, s2)   (prior_scale = s, or
    (s1, s2) per layer), h = 1..hidden, k = 1..K (K = 1 for regression, num_classes otherwise)
    f(x) = relu(x W1ᵀ + b1) W2 + b2
    regression: tau ~ Gamma(noise_shape, noise_rate) (a precision, rate parametrisation);
    y[n] ~ Normal(f(x[n]), tau^-1/2), or Normal(f(x[n]), noise_sd) with noise_sd fixed
    classification: y[n] ~ Categorical(logits = f(x[n]))  (y holds class indices 0..K-1)

    Gamma(1, 0.01) on tau is weak for targets of unit scale: its density on sigma = tau^-1/2
    peaks at 0.08, has a heavy sigma^-3 tail above and falls to 1e-3 of its peak at 0.03.
    (PBP's Gamma(6, 6) pulls sigma towards 1: on toy_regression_1d, sigma = 0.1 and N = 100,
    its conditional posterior would put sigma near 0.34.)
    ``subsample_size`` minibatches through the data plate (likelihood scaled by N/B, prior and
    KL counted once per ELBO). Its own guide (``guide="model"``) is mean-field Gaussian with
    softplus scales initialised at 6.7e-3 and q(tau) = Gamma; with ``elbo="meanfield"`` every KL
    is closed-form. No NUTS/HMC mixing across the network's symmetric modes is claimed:
    R-hat will flag it. No deterministic sites: ``zoo.models.networks.predictive(fit, x)``.
    """
    num_data, in_dim = x.shape
    out = out_dim(task, num_classes)
    s1, s2 = layer_prior_scales(prior_scale)
    # One plate over hidden units: W1's rows, b1 and W2's rows are independent given it, and it
    # sits at the data plate's dim (siblings, never nested), so max_plate_nesting stays 1.
    with pyro.plate("hidden", int(hidden), dim=-1):
        W1 = pyro.sample("W1", dist.Normal(x.new_zeros(()), s1).expand([in_dim]).to_event(1))
        b1 = pyro.sample("b1", dist.Normal(x.new_zeros(()), s1))
        W2 = pyro.sample("W2", dist.Normal(x.new_zeros(()), s2).expand([out]).to_event(1))
    # b2 in a plate of its own rather than with an event dim: zoo lays out batched draws as
    # (S, *site shape), padding only sites with fewer dims than the plate nesting, so a site
    # outside every plate must have no event dims to be read correctly under an outer plate.
    with pyro.plate("outputs", out, dim=-1):
        b2 = pyro.sample("b2", dist.Normal(x.new_zeros(()), s2))
    if _learn_noise(task, noise_sd):
        tau = pyro.sample("tau", dist.Gamma(x.new_tensor(float(noise_shape)),
                                            x.new_tensor(float(noise_rate))))
        sigma = tau.rsqrt()
    elif task == "regression":
        sigma = x.new_tensor(float(noise_sd))
    with pyro.plate("data", num_data, subsample_size=subsample_size, dim=-1) as idx:
        f = forward(x[idx], W1, b1, W2, b2)  # (..., B, out)
        obs = None if y is None else y[idx]
        if task == "regression":
            return pyro.sample("y", dist.Normal(f.squeeze(-1), sigma), obs=obs)
        return pyro.sample("y", dist.Categorical(logits=f), obs=obs)


# --------------------------------------------------------------------------------------------
# Predictions from weight draws (any Fit of bnn_mlp, or zoo.bdl.bbb)
# --------------------------------------------------------------------------------------------


def predictive_from_draws(x: Tensor, draws: Mapping[str, Tensor], task: str = "regression",
                          noise_sd: float | None = None) -> RegressionPredictive | ClassificationPredictive:
    """The predictive at ``x`` (M, D) from S weight draws ``draws[site]`` shaped (S, *site).

    Regression: mean[s] = f_s(x), var[s] = 1/tau_s (or noise_sd²); classification:
    probs[s] = softmax(f_s(x)). Each draw is one whole network, so the split into aleatoric and
    epistemic parts (``zoo.uncertainty``) is that of the weight posterior.
    """
    W1, b1, W2, b2 = (torch.as_tensor(draws[s], dtype=x.dtype) for s in LAYERS)
    # Draws in chunks, so the hidden activations (chunk, M, H) stay within ~2^24 numbers
    # (the result itself is (S, M, out), what the predictive holds anyway).
    chunk = max(1, 2**24 // max(1, x.shape[0] * W1.shape[-2]))
    f = torch.cat([forward(x, W1[i:i + chunk], b1[i:i + chunk], W2[i:i + chunk], b2[i:i + chunk])
                   for i in range(0, W1.shape[0], chunk)])  # (S, M, out)
    if task == "classification":
        return ClassificationPredictive(torch.softmax(f, -1))
    mean = f.squeeze(-1)
    if noise_sd is not None:
        var = torch.full_like(mean, float(noise_sd) ** 2)
    else:
        tau = torch.as_tensor(draws["tau"], dtype=x.dtype).reshape(-1, 1)
        var = (1.0 / tau).expand_as(mean)
    return RegressionPredictive(mean, var)


def predictive(fit: Any, x: Any) -> RegressionPredictive | ClassificationPredictive:
    """The predictive of a ``zoo.fit("bnn_mlp", ...)`` result at new inputs ``x`` (M, D),
    from every posterior draw (chains pooled); ``task`` and ``noise_sd`` are the fit's."""
    if fit.model != "bnn_mlp":
        raise ZooError(f"predictive needs a fit of 'bnn_mlp', got {fit.model!r}")
    x = torch.as_tensor(np.asarray(x, dtype=float), dtype=fit.dtype)
    expected = fit.data["x"].shape[-1]
    if x.dim() != 2 or x.shape[-1] != expected:
        raise ZooError(f"x has shape {tuple(x.shape)}; the fit expects (M, {expected})")
    if not torch.isfinite(x).all():
        raise ZooError("x has NaN/inf values")
    sites = list(LAYERS) + (["tau"] if "tau" in fit.posterior else [])
    return predictive_from_draws(x, fit.draws(sites), fit.data.get("task", "regression"),
                                 fit.data.get("noise_sd"))


# --------------------------------------------------------------------------------------------
# A small data set for the registry's smoke tests and the uncertainty tests
# --------------------------------------------------------------------------------------------


@register_dataset(synthetic=True, source="zoo.models.networks (numpy default_rng(seed))")
def toy_regression_1d(n: int = 100, noise: float = 0.1, seed: int = 0) -> dict:
    """1-D regression with a gap: x ~ Uniform on [-3, -1] ∪ [1, 3], y = sin(1.5 x) + noise.

    y[i] ~ Normal(sin(1.5 x[i]), noise); half the points in each cluster. For bnn_mlp (x is
    (n, 1)); the gap (-1, 1) and the outside |x| > 3 test epistemic uncertainty.
    """
    if n < 2 or not noise > 0:
        raise ZooError(f"toy_regression_1d: need n >= 2 and noise > 0, got n={n}, noise={noise}")
    rng = np.random.default_rng(seed)
    side = np.where(np.arange(n) < n // 2, -1.0, 1.0)
    x = side * rng.uniform(1.0, 3.0, size=n)
    y = np.sin(1.5 * x) + noise * rng.standard_normal(n)
    return {"x": torch.as_tensor(x[:, None], dtype=torch.float64),
            "y": torch.as_tensor(y, dtype=torch.float64)}
