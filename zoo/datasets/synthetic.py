"""Synthetic data sets: small, seeded, with a known truth.

Each loader draws from ``numpy.random.default_rng(seed)``, so the same arguments give the same
data on every machine, and returns float64 tensors keyed by model argument. The values that
generated the data are available from ``synthetic_truth(name, **args)`` (they cannot sit in the
data dict: every key there must be a model argument).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import numpy as np
import torch

from ..errors import ZooError, unknown
from ..registry import register_dataset

Data = dict[str, Any]
Truth = dict[str, Any]

# The fixed polynomial behind polynomial_synthetic: y = sum_j c[j] x^j + noise, for j <= degree.
POLYNOMIAL_COEFFICIENTS = (0.5, -1.0, 2.0, 1.5, -1.0, 0.8)


def _tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ZooError(message)


# --------------------------------------------------------------------------------------------
# Makers: (data, truth) from the loader's arguments
# --------------------------------------------------------------------------------------------


def _binomial(groups: int, trials: int, p: float, seed: int) -> tuple[Data, Truth]:
    _require(
        groups >= 1 and trials >= 1,
        f"binomial_synthetic: groups={groups} and trials={trials} must be >= 1",
    )
    _require(0.0 <= p <= 1.0, f"binomial_synthetic: p={p} must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    y = rng.binomial(trials, p, size=groups)
    return {"n": _tensor(np.full(groups, trials)), "y": _tensor(y)}, {"p": p}


def _normal(n: int, mu: float, sigma: float, seed: int) -> tuple[Data, Truth]:
    _require(n >= 1, f"normal_synthetic: n={n} must be >= 1")
    _require(sigma > 0, f"normal_synthetic: sigma={sigma} must be > 0")
    rng = np.random.default_rng(seed)
    y = mu + sigma * rng.standard_normal(n)
    return {"N": int(n), "y": _tensor(y), "sigma": float(sigma)}, {"mu": mu}


def _linear(n: int, d: int, seed: int, noise: float) -> tuple[Data, Truth]:
    _require(n >= 1 and d >= 1, f"linear_synthetic: n={n} and d={d} must be >= 1")
    _require(noise > 0, f"linear_synthetic: noise={noise} must be > 0")
    rng = np.random.default_rng(seed)
    beta = rng.standard_normal(d)
    x = np.column_stack([np.ones(n), rng.standard_normal((n, d - 1))])
    y = x @ beta + noise * rng.standard_normal(n)
    return {"x": _tensor(x), "y": _tensor(y)}, {"beta": beta, "sigma": noise}


def _logistic(n: int, d: int, seed: int) -> tuple[Data, Truth]:
    _require(n >= 1 and d >= 1, f"logistic_synthetic: n={n} and d={d} must be >= 1")
    rng = np.random.default_rng(seed)
    alpha = rng.standard_normal()
    beta = rng.standard_normal(d)
    x = rng.standard_normal((n, d))
    prob = 1.0 / (1.0 + np.exp(-(alpha + x @ beta)))
    y = rng.random(n) < prob
    return {"x": _tensor(x), "y": _tensor(y)}, {"alpha": alpha, "beta": beta}


def _polynomial(n: int, degree: int, noise: float, seed: int) -> tuple[Data, Truth]:
    top = len(POLYNOMIAL_COEFFICIENTS) - 1
    _require(0 <= degree <= top, f"polynomial_synthetic: degree={degree} must be in 0..{top}")
    _require(n >= 1, f"polynomial_synthetic: n={n} must be >= 1")
    _require(noise > 0, f"polynomial_synthetic: noise={noise} must be > 0")
    rng = np.random.default_rng(seed)
    beta = np.asarray(POLYNOMIAL_COEFFICIENTS[: degree + 1])
    x = np.sort(rng.uniform(-1.0, 1.0, n))  # sorted so line plots of x against y read well
    y = np.vander(x, degree + 1, increasing=True) @ beta + noise * rng.standard_normal(n)
    return {"x": _tensor(x), "y": _tensor(y)}, {"beta": beta, "sigma": noise}


def _radon(num_groups: int, n: int, seed: int) -> tuple[Data, Truth]:
    _require(num_groups >= 1 and n >= num_groups,
             f"radon_synthetic: need n >= num_groups >= 1, got n={n}, num_groups={num_groups}")
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, 1.2, num_groups)
    extra = rng.choice(num_groups, size=n - num_groups, p=weights / weights.sum())
    group = np.concatenate([np.arange(num_groups), extra])  # every group at least once
    rng.shuffle(group)
    a = 1.5 + 0.3 * rng.standard_normal(num_groups)
    b = -0.6 + 0.2 * rng.standard_normal(num_groups)
    x = (rng.random(n) < 0.2).astype(float)
    y = a[group] + b[group] * x + 0.75 * rng.standard_normal(n)
    data = {"x": _tensor(x), "group": _tensor(group), "y": _tensor(y), "num_groups": int(num_groups)}
    return data, {"a": a, "b": b, "sigma_y": 0.75}


# --------------------------------------------------------------------------------------------
# Registered loaders
# --------------------------------------------------------------------------------------------


@register_dataset(source="made up: a fixed count, no randomness")
def coin_flips(n: int = 100, heads: int = 50) -> Data:
    """One coin tossed n times showing heads `heads` times (for beta_binomial: one group)."""
    _require(
        n >= 1 and 0 <= heads <= n, f"coin_flips: need 0 <= heads <= n, got heads={heads}, n={n}"
    )
    return {"n": _tensor([n]), "y": _tensor([heads])}


@register_dataset(synthetic=True, source="zoo.datasets.synthetic (numpy default_rng(seed))")
def binomial_synthetic(groups: int = 5, trials: int = 20, p: float = 0.3, seed: int = 0) -> Data:
    """Binomial counts of `groups` groups with `trials` trials each and one success rate p.

    y[i] ~ Binomial(trials, p); truth: p.
    """
    return _binomial(groups, trials, p, seed)[0]


@register_dataset(synthetic=True, source="zoo.datasets.synthetic (numpy default_rng(seed))")
def normal_synthetic(n: int = 50, mu: float = 1.5, sigma: float = 1.0, seed: int = 0) -> Data:
    """n Normal observations with known noise sigma (for normal_normal).

    y[i] ~ Normal(mu, sigma); truth: mu. Returns N, y and sigma.
    """
    return _normal(n, mu, sigma, seed)[0]


@register_dataset(synthetic=True, source="zoo.datasets.synthetic (numpy default_rng(seed))")
def linear_synthetic(n: int = 100, d: int = 3, seed: int = 0, noise: float = 0.5) -> Data:
    """Linear-regression data with an intercept column: x is (n, d), x[:, 0] = 1.

    beta ~ Normal(0, I_d) drawn from the seed; x[:, 1:] ~ Normal(0, 1);
    y = x beta + noise * Normal(0, 1); truth: beta, sigma = noise.
    """
    return _linear(n, d, seed, noise)[0]


@register_dataset(synthetic=True, source="zoo.datasets.synthetic (numpy default_rng(seed))")
def logistic_synthetic(n: int = 200, d: int = 3, seed: int = 0) -> Data:
    """Binary outcomes from a logistic model; x is (n, d) without an intercept column.

    alpha, beta[d] ~ Normal(0, 1) drawn from the seed; x ~ Normal(0, 1);
    y ~ Bernoulli(logit^-1(alpha + x beta)); truth: alpha, beta.
    """
    return _logistic(n, d, seed)[0]


@register_dataset(synthetic=True, source="zoo.datasets.synthetic (numpy default_rng(seed))")
def polynomial_synthetic(n: int = 30, degree: int = 2, noise: float = 0.3, seed: int = 0) -> Data:
    """Noisy values of a fixed polynomial at n sorted points x ~ Uniform(-1, 1).

    y = sum_{j <= degree} c[j] x^j + noise * Normal(0, 1) with
    c = (0.5, -1.0, 2.0, 1.5, -1.0, 0.8); the default (degree 2) is 0.5 - x + 2 x^2.
    Truth: beta = c[:degree + 1], sigma = noise.
    """
    return _polynomial(n, degree, noise, seed)[0]


@register_dataset(synthetic=True, source="zoo.datasets.synthetic (numpy default_rng(seed))")
def radon_synthetic(num_groups: int = 85, n: int = 900, seed: int = 0) -> Data:
    """Radon-like grouped data: n households in num_groups counties of very uneven size.

    Sizes follow the Minnesota radon data's skew (a few large counties, many with a handful of
    households; every county has at least one); x = floor (0 basement, 1 first floor, P = 0.2);
    a[j] ~ Normal(1.5, 0.3), b[j] ~ Normal(-0.6, 0.2), y = a[g] + b[g] x + Normal(0, 0.75).
    For hierarchical_linear; truth: a, b, sigma_y.
    """
    return _radon(num_groups, n, seed)[0]


Makers = dict[str, tuple[Callable[..., Data], Callable[..., tuple[Data, Truth]]]]
_MAKERS: Makers = {
    "binomial_synthetic": (binomial_synthetic, _binomial),
    "normal_synthetic": (normal_synthetic, _normal),
    "linear_synthetic": (linear_synthetic, _linear),
    "logistic_synthetic": (logistic_synthetic, _logistic),
    "polynomial_synthetic": (polynomial_synthetic, _polynomial),
    "radon_synthetic": (radon_synthetic, _radon),
}


def truth_of(makers: Makers, kind: str, name: str, args: dict) -> Truth:
    """The truth half of ``makers[name]`` called with the loader's arguments (defaults filled),
    so the truth belongs to exactly the data set the loader returns for ``args``."""
    if name not in makers:
        raise unknown(f"{kind} data set", name, makers)
    loader, maker = makers[name]
    try:
        bound = inspect.signature(loader).bind(**args)
    except TypeError as e:
        raise ZooError(f"{kind}_truth({name!r}): {e}") from None
    bound.apply_defaults()
    return maker(**bound.arguments)[1]


def synthetic_truth(name: str, **args) -> Truth:
    """The parameter values that generated synthetic data set ``name`` with ``args``."""
    return truth_of(_MAKERS, "synthetic", name, args)

