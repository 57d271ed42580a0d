"""Synthetic data sets for the mixture models: small, seeded, with a known truth.

Each loader draws from ``numpy.random.default_rng(seed)`` (same arguments, same data on every
machine) and returns float64 tensors keyed by model argument; ``mixture_truth(name, **args)``
gives the values that generated them (the assignments z included).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..errors import ZooError
from ..registry import register_dataset
from .synthetic import Makers, truth_of

Data = dict[str, Any]
Truth = dict[str, Any]

# posteriordb's low_dim_gauss_mix posterior means (rounded): the default truth of its small
# synthetic stand-in, so the default data look like the reference data, only 10x fewer.
LOW_DIM_GAUSS_MIX_TRUTH = {"mu": (-2.75, 2.87), "sigma": (1.0, 1.0), "theta": 0.62}


def _tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64)


def _draw(n: int, weights: np.ndarray, locs: np.ndarray, scales: np.ndarray,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """z[n] ~ Categorical(weights), y[n] ~ Normal(locs[z[n]], scales[z[n]])."""
    rng = np.random.default_rng(seed)
    z = rng.choice(len(weights), size=n, p=weights)
    return locs[z] + scales[z] * rng.standard_normal(n), z


def _check(name: str, n: int, weights: Sequence[float], locs: Sequence[float],
           scales: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    w, m, s = (np.asarray(v, dtype=np.float64) for v in (weights, locs, scales))
    if n < 1:
        raise ZooError(f"{name}: n={n} must be >= 1")
    if not (w.ndim == m.ndim == s.ndim == 1 and len(w) == len(m) == len(s) >= 1):
        raise ZooError(f"{name}: weights, locs and scales must be 1-D and of one length K >= 1, "
                       f"got lengths {len(w)}, {len(m)}, {len(s)}")
    if (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ZooError(f"{name}: weights={list(w)} must be >= 0 and sum to 1")
    if (s <= 0).any():
        raise ZooError(f"{name}: scales={list(s)} must be > 0")
    if (np.diff(m) <= 0).any():
        raise ZooError(f"{name}: locs={list(m)} must be strictly increasing (the models order "
                       "their component locations to break label switching)")
    return w, m, s


def _gaussian_mixture(n: int, weights, locs, scales, seed: int) -> tuple[Data, Truth]:
    w, m, s = _check("mixture_synthetic", n, weights, locs, scales)
    y, z = _draw(n, w, m, s, seed)
    return ({"N": int(n), "y": _tensor(y), "K": len(w)},
            {"weights": w, "locs": m, "scales": s, "z": z})


def _low_dim_gauss_mix(n: int, mu, sigma, theta: float, seed: int) -> tuple[Data, Truth]:
    if not 0.0 < theta < 1.0:
        raise ZooError(f"low_dim_gauss_mix_synthetic: theta={theta} must lie in (0, 1)")
    if len(mu) != 2 or len(sigma) != 2:
        raise ZooError(f"low_dim_gauss_mix_synthetic: mu and sigma must have 2 entries, got "
                       f"{list(mu)} and {list(sigma)}")
    w, m, s = _check("low_dim_gauss_mix_synthetic", n, (theta, 1.0 - theta), mu, sigma)
    y, z = _draw(n, w, m, s, seed)
    return {"N": int(n), "y": _tensor(y)}, {"mu": m, "sigma": s, "theta": theta, "z": z}


@register_dataset(synthetic=True, source="zoo.datasets.mixture (numpy default_rng(seed))")
def mixture_synthetic(n: int = 60, weights: Sequence[float] = (0.4, 0.6),
                      locs: Sequence[float] = (-2.0, 2.0), scales: Sequence[float] = (0.7, 1.0),
                      seed: int = 0) -> Data:
    """n draws from a 1-D mixture of K Gaussians (for gaussian_mixture); returns N, y and K.

    z[n] ~ Categorical(weights), y[n] ~ Normal(locs[z[n]], scales[z[n]]); K = len(weights).
    Truth: weights, locs (increasing), scales and the assignments z. The default is small
    (K = 2, n = 60) because NUTS with enumeration costs ~4x a plain gradient; pass e.g.
    weights=(0.3, 0.5, 0.2), locs=(-4, 0, 4), scales=(0.7, 1, 0.5), n=300 for a harder case.
    """
    return _gaussian_mixture(n, weights, locs, scales, seed)[0]


@register_dataset(synthetic=True, source="zoo.datasets.mixture (numpy default_rng(seed))")
def low_dim_gauss_mix_synthetic(n: int = 100, mu: Sequence[float] = LOW_DIM_GAUSS_MIX_TRUTH["mu"],
                                sigma: Sequence[float] = LOW_DIM_GAUSS_MIX_TRUTH["sigma"],
                                theta: float = LOW_DIM_GAUSS_MIX_TRUTH["theta"],
                                seed: int = 0) -> Data:
    """n draws from a two-component 1-D Gaussian mixture, posteriordb's low_dim_gauss_mix
    in small (its reference data have N = 1000); returns N and y.

    y[n] ~ theta Normal(mu[0], sigma[0]) + (1 - theta) Normal(mu[1], sigma[1]);
    the defaults are the reference posterior's means; truth: mu, sigma, theta, z.
    """
    return _low_dim_gauss_mix(n, mu, sigma, theta, seed)[0]


_MAKERS: Makers = {
    "mixture_synthetic": (mixture_synthetic, _gaussian_mixture),
    "low_dim_gauss_mix_synthetic": (low_dim_gauss_mix_synthetic, _low_dim_gauss_mix),
}


def mixture_truth(name: str, **args) -> Truth:
    """The parameter values (and assignments z) that generated mixture data set ``name``."""
    return truth_of(_MAKERS, "mixture", name, args)
