"""Data sets for the Gaussian-process models (``zoo.models.gp``).

``gp_synthetic`` draws one function from a GP with a squared-exponential (RBF) kernel, so the
hyperparameters that made it are known: they are the loader's own arguments.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ZooError
from ..registry import register_dataset


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ZooError(message)


@register_dataset(synthetic=True, source="zoo.datasets.gp (numpy default_rng(seed))")
def gp_synthetic(n: int = 40, seed: int = 0, lengthscale: float = 1.0, amplitude: float = 1.0,
                 sigma: float = 0.25) -> dict:
    """One draw of a GP with an RBF kernel, observed with Gaussian noise at n sorted inputs.

    x[i] ~ Uniform(0, 10), sorted;  f ~ MultivariateNormal(0, K),
    K[i, j] = amplitude² exp(-(x[i] - x[j])² / (2 lengthscale²));  y = f + sigma * Normal(0, 1).
    For gp_regression and sparse_gp_regression; the truth is the arguments (lengthscale,
    amplitude, sigma).
    """
    _require(isinstance(n, int) and n >= 2, f"gp_synthetic: n={n!r} must be an integer >= 2")
    for key, value in (("lengthscale", lengthscale), ("amplitude", amplitude), ("sigma", sigma)):
        _require(value > 0, f"gp_synthetic: {key}={value} must be > 0")
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(0.0, 10.0, n))
    cov = amplitude**2 * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / lengthscale**2)
    # An RBF Gram matrix is numerically singular at this spacing: the jitter (1e-8 of the
    # variance) only lets the Cholesky succeed, far below the noise.
    chol = np.linalg.cholesky(cov + 1e-8 * amplitude**2 * np.eye(n))
    f = chol @ rng.standard_normal(n)
    y = f + sigma * rng.standard_normal(n)
    return {"x": torch.as_tensor(x, dtype=torch.float64),
            "y": torch.as_tensor(y, dtype=torch.float64)}
