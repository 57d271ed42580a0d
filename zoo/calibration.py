"""Calibration of predictive distributions: does a stated probability match a frequency?

Regression (on a ``zoo.uncertainty.RegressionPredictive``): the empirical **coverage** of central
intervals against their nominal level, and the **PIT** u_n = F_n(y_n), uniform on [0, 1] when the
predictive CDFs F_n are right (Dawid 1984; Gneiting et al. 2007).

Classification (class probabilities ``probs`` (N, K), labels ``y`` (N,)): with confidence
c_n = max_k p_nk and correctness a_n = 1[argmax_k p_nk = y_n], B equal-width confidence bins
(Guo et al. 2017)

    ECE = Σ_b (|b| / N) · |acc(b) − conf(b)|,     MCE = max_b |acc(b) − conf(b)|,

and the proper scores NLL = −mean log p_{n,y_n} and Brier = mean_n Σ_k (p_nk − 1[y_n = k])².
Temperature scaling (Guo et al. 2017) rescales logits by one T > 0 fitted on held-out data.

numpy/torch only (ArviZ has none of this); the figures use matplotlib's Agg backend.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from .errors import ZooError  # noqa: E402
from .uncertainty import RegressionPredictive  # noqa: E402

DPI = 80
ArrayLike = torch.Tensor | np.ndarray | Sequence[float]

# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


def coverage(pred: RegressionPredictive, y: torch.Tensor,
             levels: Sequence[float] = (0.5, 0.9, 0.95)) -> dict[float, float]:
    """The fraction of y inside the predictive's central interval, per nominal level.

    A calibrated predictive covers ≈ ``level`` of the points (binomial sd √(l(1−l)/N)).
    """
    y = torch.as_tensor(y, dtype=pred.mean.dtype)
    out = {}
    for level in levels:
        if not 0 < level < 1:
            raise ZooError(f"coverage level {level!r} is not allowed: levels lie in (0, 1)")
        lo, hi = pred.interval(level)
        out[level] = float(((y >= lo) & (y <= hi)).double().mean())
    return out


def pit(pred: RegressionPredictive, y: torch.Tensor) -> torch.Tensor:
    """The probability integral transform u_n = F_n(y_n) (N,): uniform if calibrated; a U shape
    means over-confident, a hump under-confident, a slope a biased mean."""
    return pred.cdf(torch.as_tensor(y, dtype=pred.mean.dtype))


def pit_histogram(values: ArrayLike, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(counts, edges) of PIT values over ``bins`` equal bins of [0, 1]; each count is
    Binomial(N, 1/bins) under calibration."""
    u = _numpy(values)
    return np.histogram(np.clip(u, 0.0, 1.0), bins=bins, range=(0.0, 1.0))


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def _check(probs: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    probs = torch.as_tensor(probs, dtype=torch.float64)
    y = torch.as_tensor(y)
    if probs.dim() != 2 or y.shape != probs.shape[:1]:
        raise ZooError(f"probs should be (N, K) and y (N,): got {tuple(probs.shape)} and "
                       f"{tuple(y.shape)}")
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise ZooError("y should hold integer class labels")
    if len(y) == 0:
        raise ZooError("probs and y are empty: calibration needs at least one point")
    y = y.long()
    k = probs.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise ZooError(f"class label {int(y[(y < 0) | (y >= k)][0])} out of range 0..{k - 1}")
    # 1e-4, not 1e-12: float32 softmax rows sum to 1 only to ~K·1e-7; the check is for logits
    if (probs < 0).any() or ((probs.sum(1) - 1).abs() > 1e-4).any():
        raise ZooError("probs rows should be probabilities (non-negative, summing to 1); "
                       "pass softmax(logits), not logits")
    return probs, y


def _bins(probs: torch.Tensor, y: torch.Tensor,
          bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-bin (count, mean confidence, accuracy) over ``bins`` bins ((b−1)/B, b/B]."""
    if not isinstance(bins, int) or bins < 1:
        raise ZooError(f"bins={bins!r} is not allowed: a positive integer")
    probs, y = _check(probs, y)
    conf, pred = probs.max(1)
    correct = (pred == y).double()
    # Bins are closed on the right, as in Guo et al.: confidence 1 belongs to the top bin.
    index = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    count = torch.bincount(index, minlength=bins).double()
    conf_sum = torch.bincount(index, weights=conf, minlength=bins)
    acc_sum = torch.bincount(index, weights=correct, minlength=bins)
    return count, conf_sum / count, acc_sum / count  # NaN in empty bins


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error Σ_b (|b|/N)|acc(b) − conf(b)| over equal-width confidence
    bins (Guo et al. 2017). Biased upwards by sampling noise: ≈ O(√(B/N))."""
    count, conf, acc = _bins(probs, y, bins)
    full = count > 0
    return float((count[full] * (acc[full] - conf[full]).abs()).sum() / count.sum())


def mce(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """Maximum calibration error max_b |acc(b) − conf(b)| over the non-empty bins."""
    count, conf, acc = _bins(probs, y, bins)
    full = count > 0
    return float((acc[full] - conf[full]).abs().max())


def nll(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Mean negative log-likelihood −(1/N) Σ_n log p_{n, y_n} (nats)."""
    probs, y = _check(probs, y)
    # the floor matches ClassificationPredictive.log_likelihood: p = 0 is a huge, finite loss
    return float(-probs.gather(1, y[:, None]).clamp_min(1e-300).log().mean())


def brier(probs: torch.Tensor, y: torch.Tensor) -> float:
    """Multi-class Brier score (1/N) Σ_n Σ_k (p_nk − 1[y_n = k])², in [0, 2]."""
    probs, y = _check(probs, y)
    onehot = torch.nn.functional.one_hot(y, probs.shape[1]).double()
    return float(((probs - onehot) ** 2).sum(1).mean())


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    probs, y = _check(probs, y)
    return float((probs.argmax(1) == y).double().mean())


def reliability(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> pd.DataFrame:
    """The reliability table: one row per bin with ``lower``, ``upper``, mean ``confidence``,
    ``accuracy`` (NaN in empty bins) and ``count``."""
    count, conf, acc = _bins(probs, y, bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return pd.DataFrame({
        "lower": edges[:-1], "upper": edges[1:], "confidence": conf.numpy(),
        "accuracy": acc.numpy(), "count": count.numpy().astype(np.int64),
    })


def summary(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """All classification metrics: accuracy, nll, brier, ece, mce."""
    return {"accuracy": accuracy(probs, y), "nll": nll(probs, y), "brier": brier(probs, y),
            "ece": ece(probs, y, bins), "mce": mce(probs, y, bins)}


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature T > 0 minimising the NLL of softmax(logits / T) on (logits, y).

    Fit it on a **validation split**, never on the test points it is then judged on. T is found
    by L-BFGS over log T (so T stays positive); the NLL is convex in 1/T, so the minimum found is
    the global one. T > 1 softens an over-confident model. Degenerate data has no finite optimum:
    if every point is classified right the NLL falls all the way to T → 0 (if every point is
    wrong, to T → ∞), and the T returned is merely very small (large).
    """
    logits = torch.as_tensor(logits, dtype=torch.float64).detach()
    y = torch.as_tensor(y).long()
    _check(torch.softmax(logits, -1), y)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-12)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not (np.isfinite(t) and t > 0):
        raise ZooError(f"temperature scaling did not converge (T = {t})")
    return t


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T): the temperature-scaled class probabilities (N, K)."""
    if not (np.isfinite(temperature) and temperature > 0):
        raise ZooError(f"temperature {temperature!r} is not allowed: a finite T > 0")
    return torch.softmax(torch.as_tensor(logits) / temperature, dim=-1)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def reliability_diagram(tables: Mapping[str, pd.DataFrame], path: str | os.PathLike) -> Path:
    """Accuracy against mean confidence per bin, one line per labelled ``reliability`` table,
    over the diagonal a calibrated model follows; writes a PNG to ``path`` and returns it."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for label, table in tables.items():
        full = table[table["count"] > 0]
        ax.plot(full["confidence"], full["accuracy"], "o-", ms=4, label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
           title="reliability diagram")
    ax.legend(fontsize="small")
    return _save(fig, path)


def pit_figure(values: Mapping[str, ArrayLike], path: str | os.PathLike,
               bins: int = 10) -> Path:
    """PIT histograms as densities, one step line per label, against the uniform density 1 a
    calibrated predictive gives; writes a PNG to ``path`` and returns it."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.axhline(1.0, color="k", ls="--", lw=1, label="uniform")
    for label, u in values.items():
        counts, edges = pit_histogram(u, bins)
        density = counts / max(counts.sum(), 1) * bins
        ax.stairs(density, edges, label=label)
    ax.set(xlim=(0, 1), xlabel="PIT  F(y)", ylabel="density",
           title="probability integral transform")
    ax.legend(fontsize="small")
    return _save(fig, path)


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _numpy(values: ArrayLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).ravel()
