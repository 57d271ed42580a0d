"""Data sets for the time-series models (and the posteriordb-style ``blr``).

The synthetic loaders draw from ``numpy.random.default_rng(seed)`` and return float64 tensors
keyed by model argument; the values that generated them are the module constants named in each
docstring. ``nile`` is the classic local-level series, shipped as ``data/nile.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ZooError
from ..registry import register_dataset

_SOURCE = "zoo.datasets.timeseries (numpy default_rng(seed))"
NILE_CSV = Path(__file__).with_name("data") / "nile.csv"

# A stationary AR(3) (roots of 1 - 0.5 z + 0.3 z^2 - 0.2 z^3 lie outside the unit circle).
AR_ALPHA = 0.2
AR_BETA = (0.5, -0.3, 0.2)
AR_SIGMA = 0.5


def _tensor(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=torch.float64)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ZooError(message)


@register_dataset(synthetic=True, source=_SOURCE)
def ar_synthetic(T: int = 100, K: int = 3, seed: int = 0) -> dict:
    """A stationary AR(K) series for ar_k: K, T and y (K <= 3).

    y[t] = AR_ALPHA + sum_k AR_BETA[k] y[t-k] + AR_SIGMA eps[t], eps[t] ~ Normal(0, 1), with
    AR_ALPHA = 0.2, AR_BETA = (0.5, -0.3, 0.2)[:K], AR_SIGMA = 0.5; 200 steps of burn-in from
    zeros are dropped so the series starts near stationarity.
    """
    _require(1 <= K <= len(AR_BETA), f"ar_synthetic: K={K} must be in 1..{len(AR_BETA)}")
    _require(T > K, f"ar_synthetic: T={T} must exceed K={K}")
    rng = np.random.default_rng(seed)
    beta, burn = np.asarray(AR_BETA[:K]), 200
    y = np.zeros(burn + T)
    eps = rng.standard_normal(burn + T)
    for t in range(K, burn + T):  # the recursion is sequential by nature
        y[t] = AR_ALPHA + beta @ y[t - K:t][::-1] + AR_SIGMA * eps[t]
    return {"K": int(K), "T": int(T), "y": _tensor(y[burn:])}


@register_dataset(synthetic=True, source=_SOURCE)
def local_level_synthetic(T: int = 20, sigma_eps: float = 1.0, sigma_eta: float = 1.0,
                          level: float = 0.0, seed: int = 0) -> dict:
    """A random walk observed with noise, for local_level: T and y.

    mu[1] = level; mu[t] = mu[t-1] + sigma_eta eta[t]; y[t] = mu[t] + sigma_eps eps[t];
    eta, eps ~ Normal(0, 1). Truth: the arguments.
    """
    _require(T >= 2, f"local_level_synthetic: T={T} must be >= 2")
    _require(sigma_eps > 0 and sigma_eta > 0,
             f"local_level_synthetic: sigma_eps={sigma_eps} and sigma_eta={sigma_eta} must be > 0")
    rng = np.random.default_rng(seed)
    mu = level + np.concatenate([[0.0], np.cumsum(sigma_eta * rng.standard_normal(T - 1))])
    return {"T": int(T), "y": _tensor(mu + sigma_eps * rng.standard_normal(T))}


@register_dataset(
    source=(
        "Annual flow of the Nile at Aswan 1871-1970 (10^8 m^3), R's datasets::Nile via "
        "Rdatasets (vincentarelbundock/Rdatasets csv/datasets/Nile.csv); Cobb (1978), "
        "Biometrika 65(2); Durbin & Koopman (2012), Time Series Analysis by State Space "
        "Methods, 2nd ed., section 2.2.5. Public domain."
    )
)
def nile(scale: float = 100.0) -> dict:
    """The Nile's annual flow 1871-1970 (100 values), the local-level example of Durbin & Koopman.

    y[t] = volume[t] / scale; volume in 10^8 m^3. The default scale 100 puts y near 9
    (sd 1.7), where local_level's default priors are weakly informative; scale=1 gives the
    published units (Durbin & Koopman's MLE: sigma_eps^2 = 15099, sigma_eta^2 = 1469.1).
    """
    _require(scale > 0, f"nile: scale={scale} must be > 0")
    table = np.loadtxt(NILE_CSV, delimiter=",", skiprows=1)
    return {"T": len(table), "y": _tensor(table[:, 1] / scale)}


def nile_years() -> np.ndarray:
    """The years of ``nile()``'s values, 1871..1970."""
    return np.loadtxt(NILE_CSV, delimiter=",", skiprows=1)[:, 0].astype(int)


@register_dataset(synthetic=True, source=_SOURCE)
def blr_synthetic(N: int = 50, D: int = 3, sigma: float = 1.0, seed: int = 0) -> dict:
    """Linear-regression data in posteriordb's sblri layout, for blr: N, D, X and y.

    X[n, d] ~ Normal(0, 1); y = X beta + sigma eps with beta = (1, ..., 1), as in sblri
    (whose X has scale ~100). Truth: beta = 1, sigma.
    """
    _require(N >= 1 and D >= 1, f"blr_synthetic: N={N} and D={D} must be >= 1")
    _require(sigma > 0, f"blr_synthetic: sigma={sigma} must be > 0")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D))
    y = x.sum(axis=1) + sigma * rng.standard_normal(N)
    return {"N": int(N), "D": int(D), "X": _tensor(x), "y": _tensor(y)}
