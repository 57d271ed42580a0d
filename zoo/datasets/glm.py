"""Data sets for the glm models: small seeded synthetic sets with a known truth, and
``warpbreaks``, a real overdispersed count set shipped as ``data/glm_warpbreaks.csv``.

As in ``zoo.datasets.synthetic``: each loader draws from ``numpy.random.default_rng(seed)`` and
returns float64 tensors keyed by model argument (sizes and category counts stay Python ints);
``synthetic_truth(name, **args)`` returns the values that generated the data. Covariates are
standard Normal, so the models' priors for standardised inputs fit them. Defaults are small
(N <= 100) so smoke fits are quick; pass ``n``/``d`` (and ``seed``) for bigger runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, logit

from ..registry import register_dataset
from .synthetic import _MAKERS, Data, Truth, _require, _tensor

SOURCE = "zoo.datasets.glm (numpy default_rng(seed))"
WARPBREAKS_CSV = Path(__file__).with_name("data") / "glm_warpbreaks.csv"
WARPBREAKS_SOURCE = (
    "Tippett (1950), Technological Applications of Statistics, Wiley, p. 106: warp breaks per "
    "loom (a fixed length of yarn) for 2 wools x 3 tensions, 9 looms each. As distributed in R's "
    "datasets package (`warpbreaks`; R is GPL-2 | GPL-3), file csv/datasets/warpbreaks.csv of "
    "vincentarelbundock/Rdatasets (commit 1c97ab8a1df2469762e635481ba27cf4e80e3e51, GPL-3); "
    "only its row-name column dropped"
)


def _design(rng: np.random.Generator, n: int, d: int, name: str) -> np.ndarray:
    _require(n >= 1 and d >= 1, f"{name}: n={n} and d={d} must be >= 1")
    return rng.standard_normal((n, d))


# --------------------------------------------------------------------------------------------
# Makers: (data, truth) from the loader's arguments
# --------------------------------------------------------------------------------------------


def _robust(n: int, d: int, nu: float, noise: float, seed: int) -> tuple[Data, Truth]:
    _require(nu > 0 and noise > 0, f"robust_synthetic: nu={nu} and noise={noise} must be > 0")
    rng = np.random.default_rng(seed)
    x = _design(rng, n, d, "robust_synthetic")
    alpha, beta = rng.standard_normal(), rng.standard_normal(d)
    y = alpha + x @ beta + noise * rng.standard_t(nu, size=n)
    return ({"x": _tensor(x), "y": _tensor(y)},
            {"alpha": alpha, "beta": beta, "sigma": noise, "nu": nu})


def _counts(n: int, d: int, seed: int, name: str, exposure: bool):
    """Shared by the count sets: x, truth (alpha, beta), log mean and offset (log exposure)."""
    rng = np.random.default_rng(seed)
    x = _design(rng, n, d, name)
    # a baseline rate near e = 2.7 and rate ratios per sd mostly within [0.5, 2]
    alpha = 1.0 + 0.25 * rng.standard_normal()
    beta = 0.4 * rng.standard_normal(d)
    offset = np.log(rng.uniform(0.5, 2.0, n)) if exposure else np.zeros(n)
    return rng, x, alpha, beta, offset, alpha + x @ beta + offset


def _poisson(n: int, d: int, exposure: bool, seed: int) -> tuple[Data, Truth]:
    rng, x, alpha, beta, offset, log_mu = _counts(n, d, seed, "poisson_synthetic", exposure)
    y = rng.poisson(np.exp(log_mu))
    data = {"x": _tensor(x), "y": _tensor(y)}
    if exposure:
        data["offset"] = _tensor(offset)
    return data, {"alpha": alpha, "beta": beta}


def _negbinomial(n: int, d: int, phi: float, exposure: bool, seed: int) -> tuple[Data, Truth]:
    _require(phi > 0, f"negbinomial_synthetic: phi={phi} must be > 0")
    rng, x, alpha, beta, offset, log_mu = _counts(n, d, seed, "negbinomial_synthetic", exposure)
    rate = rng.gamma(phi, np.exp(log_mu) / phi)  # Gamma(shape phi, mean mu): NB2 as a mixture
    y = rng.poisson(rate)
    data = {"x": _tensor(x), "y": _tensor(y)}
    if exposure:
        data["offset"] = _tensor(offset)
    return data, {"alpha": alpha, "beta": beta, "phi": phi}


def _ordinal(n: int, d: int, num_categories: int, seed: int) -> tuple[Data, Truth]:
    _require(num_categories >= 2,
             f"ordinal_synthetic: num_categories={num_categories} must be >= 2")
    rng = np.random.default_rng(seed)
    x = _design(rng, n, d, "ordinal_synthetic")
    beta = rng.standard_normal(d)
    # baseline category probabilities ~ Dirichlet(4): no category nearly empty
    cumulative = np.cumsum(rng.dirichlet(np.full(num_categories, 4.0)))[:-1]
    cutpoints = logit(cumulative)
    # y = #{k : c_k < eta + logistic noise}, so P(y <= k) = logistic(c_k - eta)
    latent = x @ beta + rng.logistic(size=n)
    y = (latent[:, None] > cutpoints[None, :]).sum(axis=1)
    data = {"x": _tensor(x), "y": _tensor(y), "num_categories": int(num_categories)}
    return data, {"beta": beta, "cutpoints": cutpoints,
                  "baseline_probs": np.diff(np.concatenate([[0.0], expit(cutpoints), [1.0]]))}


def _horseshoe(n: int, d: int, nonzero: int, signal: float, noise: float,
               seed: int) -> tuple[Data, Truth]:
    _require(0 <= nonzero <= d, f"horseshoe_synthetic: need 0 <= nonzero={nonzero} <= d={d}")
    _require(noise > 0 and signal > 0,
             f"horseshoe_synthetic: noise={noise} and signal={signal} must be > 0")
    rng = np.random.default_rng(seed)
    x = _design(rng, n, d, "horseshoe_synthetic")
    beta = np.zeros(d)
    where = rng.choice(d, size=nonzero, replace=False)
    beta[where] = rng.choice([-1.0, 1.0], size=nonzero) * rng.uniform(signal, 2 * signal, nonzero)
    alpha = 0.5
    y = alpha + x @ beta + noise * rng.standard_normal(n)
    return {"x": _tensor(x), "y": _tensor(y)}, {"alpha": alpha, "beta": beta, "sigma": noise}


# --------------------------------------------------------------------------------------------
# Registered loaders
# --------------------------------------------------------------------------------------------


@register_dataset(synthetic=True, source=SOURCE)
def robust_synthetic(n: int = 100, d: int = 3, nu: float = 3.0, noise: float = 0.5,
                     seed: int = 0) -> Data:
    """Linear data with Student-t noise (outliers), for robust_regression; x has no ones column.

    alpha, beta[d] ~ Normal(0, 1) drawn from the seed; x ~ Normal(0, 1);
    y = alpha + x beta + noise * StudentT(nu); truth: alpha, beta, sigma = noise, nu.
    """
    return _robust(n, d, nu, noise, seed)[0]


@register_dataset(synthetic=True, source=SOURCE)
def poisson_synthetic(n: int = 100, d: int = 3, exposure: bool = True, seed: int = 0) -> Data:
    """Poisson counts with a log link and varying exposure, for poisson_regression.

    alpha ~ Normal(1, 0.25), beta[d] ~ Normal(0, 0.4) drawn from the seed; x ~ Normal(0, 1);
    exposure ~ Uniform(0.5, 2), offset = log exposure (omitted if exposure=False);
    y ~ Poisson(exp(alpha + x beta + offset)); truth: alpha, beta.
    """
    return _poisson(n, d, exposure, seed)[0]


@register_dataset(synthetic=True, source=SOURCE)
def negbinomial_synthetic(n: int = 100, d: int = 3, phi: float = 2.0, exposure: bool = True,
                          seed: int = 0) -> Data:
    """Overdispersed counts (NB2), for negbinomial_regression.

    alpha, beta, x and offset as in poisson_synthetic; mu = exp(alpha + x beta + offset);
    y ~ Poisson(Gamma(phi, rate phi / mu)), i.e. mean mu and variance mu + mu^2 / phi;
    truth: alpha, beta, phi.
    """
    return _negbinomial(n, d, phi, exposure, seed)[0]


@register_dataset(synthetic=True, source=SOURCE)
def ordinal_synthetic(n: int = 100, d: int = 2, num_categories: int = 4, seed: int = 0) -> Data:
    """Ordered categories 0..K-1 from a proportional-odds model, for ordinal_logistic.

    beta[d] ~ Normal(0, 1) drawn from the seed; x ~ Normal(0, 1); the baseline category
    probabilities p ~ Dirichlet(4, ..., 4) give cutpoints c_k = logit(p_0 + ... + p_k);
    y = #{k : c_k < x beta + Logistic(0, 1)}; truth: beta, cutpoints, baseline_probs.
    """
    return _ordinal(n, d, num_categories, seed)[0]


@register_dataset(synthetic=True, source=SOURCE)
def horseshoe_synthetic(n: int = 100, d: int = 15, nonzero: int = 3, signal: float = 1.5,
                        noise: float = 1.0, seed: int = 0) -> Data:
    """Sparse linear data: `nonzero` of d coefficients are non-zero, for horseshoe_regression.

    x ~ Normal(0, 1) of shape (n, d); `nonzero` positions drawn from the seed get
    +-Uniform(signal, 2 signal), the rest are exactly 0; y = 0.5 + x beta + noise * Normal(0, 1);
    truth: alpha = 0.5, beta, sigma = noise.
    """
    return _horseshoe(n, d, nonzero, signal, noise, seed)[0]


@register_dataset(source=WARPBREAKS_SOURCE)
def warpbreaks() -> Data:
    """Tippett's warp breaks: 54 counts, 2 wools x 3 tensions, for the count regressions.

    y = number of breaks per loom (mean 28, variance 174: overdispersed);
    x = [wool B, tension M, tension H] as 0/1 indicators (baseline: wool A at tension L),
    so exp(beta) are rate ratios. Every loom wove the same length: no offset.
    """
    table = pd.read_csv(WARPBREAKS_CSV)
    x = np.column_stack([table["wool"] == "B", table["tension"] == "M", table["tension"] == "H"])
    return {"x": _tensor(x), "y": _tensor(table["breaks"])}


# synthetic_truth() looks makers up here; registering ours makes it answer for these sets too.
_MAKERS.update({
    "robust_synthetic": (robust_synthetic, _robust),
    "poisson_synthetic": (poisson_synthetic, _poisson),
    "negbinomial_synthetic": (negbinomial_synthetic, _negbinomial),
    "ordinal_synthetic": (ordinal_synthetic, _ordinal),
    "horseshoe_synthetic": (horseshoe_synthetic, _horseshoe),
})
