"""ArviZ's R-hat, ESS and nested R-hat for every coordinate at once.

The sampler asks "is there enough yet?" after every block of draws, and every MCMC fit is
checked when it ends. ArviZ answers per coordinate through xarray (≈0.15 s for 89 coordinates of
128 chains, and ≈2 s to import), more than a small model's whole sampling phase; here the same
estimators (Vehtari et al. 2021: split chains, rank-normalised bulk ESS and R-hat, folded R-hat,
tail ESS as the smaller of the 5% and 95% quantile ESS, Geyer's initial monotone sequence) run on
all columns together. ``tests/test_convergence.py`` checks them against ArviZ's to 1e-8.
"""

from __future__ import annotations

import numpy as np
import torch


def split_chains(x: np.ndarray) -> np.ndarray:
    """(chain, draw, d) -> (2·chain, draw // 2, d): each chain's first and last halves."""
    half = x.shape[1] // 2
    return np.concatenate([x[:, :half], x[:, x.shape[1] - half:]], axis=0)


def _ess(x: np.ndarray) -> np.ndarray:
    """ESS of each column of x (chain, draw, d), as ArviZ's ``_ess`` on one column."""
    c, n, d = x.shape
    out = np.full(d, float(c * n))
    flat = (x.max(axis=(0, 1)) - x.min(axis=(0, 1))) < np.finfo(float).resolution
    m = 1 << int(np.ceil(np.log2(2 * n)))  # an FFT length ≥ 2n; the lags kept do not depend on it
    centred = x - x.mean(axis=1, keepdims=True)
    f = np.fft.rfft(centred, n=m, axis=1)
    acov = np.fft.irfft(f * np.conjugate(f), n=m, axis=1)[:, :n] / n  # (c, n, d)
    mean_acov = acov.mean(axis=0)  # (n, d)
    mean_var = mean_acov[0] * n / (n - 1.0)
    var_plus = mean_var * (n - 1.0) / n
    if c > 1:
        var_plus = var_plus + x.mean(axis=1).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var - mean_acov) / var_plus  # (n, d); rho[0] is 1
    rho[0] = 1.0
    kept = np.zeros((n, d))
    kept[0], kept[1] = 1.0, rho[1]
    even, odd = np.ones(d), rho[1].copy()
    active = np.ones(d, dtype=bool)
    last = np.full(d, 1)  # Geyer's max_t + 2 for columns still active
    t = 1
    while t < n - 3 and active.any():
        active &= (even + odd) > 0.0
        even = np.where(active, rho[t + 1], even)
        odd = np.where(active, rho[t + 2], odd)
        ok = active & ((even + odd) >= 0)
        kept[t + 1] = np.where(ok, even, kept[t + 1])
        kept[t + 2] = np.where(ok, odd, kept[t + 2])
        last = np.where(active, t + 2, last)
        t += 2
    # columns whose loop ended because t reached n - 3 still count that last step
    max_t = last - 2
    cols = np.arange(d)
    positive = even > 0
    kept[np.minimum(max_t + 1, n - 1)[positive], cols[positive]] = even[positive]
    for j in range(d):  # the monotone pass is short (max_t is small when mixing is good)
        r, t = kept[:, j], 1
        while t <= max_t[j] - 2:
            if r[t + 1] + r[t + 2] > r[t - 1] + r[t]:
                r[t + 1] = r[t + 2] = (r[t - 1] + r[t]) / 2.0
            t += 2
    idx = np.arange(n)[:, None]
    tau = (-1.0 + 2.0 * np.where(idx <= max_t, kept, 0.0).sum(0)
           + np.where(idx == max_t + 1, kept, 0.0).sum(0))
    tau = np.maximum(tau, 1 / np.log10(c * n))
    ess = np.where(flat, out, c * n / tau)
    return np.where(np.isnan(kept).any(0) & ~flat, np.nan, ess)


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n down each column of a (n, d), ties given their average rank (as
    ``scipy.stats.rankdata(method="average")``, without importing scipy.stats: 0.9 s)."""
    n, d = a.shape
    order = np.argsort(a, axis=0, kind="stable")
    s = np.take_along_axis(a, order, axis=0)
    new_group = np.ones((n, d), dtype=bool)
    new_group[1:] = s[1:] != s[:-1]
    pos = np.arange(1, n + 1, dtype=float)[:, None].repeat(d, 1)
    first = np.maximum.accumulate(np.where(new_group, pos, 0), axis=0)
    last_flag = np.ones((n, d), dtype=bool)
    last_flag[:-1] = new_group[1:]
    last = np.minimum.accumulate(np.where(last_flag, pos, n + 1)[::-1], axis=0)[::-1]
    ranks = np.empty((n, d))
    np.put_along_axis(ranks, order, (first + last) / 2.0, axis=0)
    return ranks


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise each column over all chains and draws (Blom's offset 3/8, as ArviZ)."""
    c, n, d = x.shape
    p = (average_ranks(x.reshape(c * n, d)) - 0.375) / (c * n + 0.25)
    return torch.special.ndtri(torch.from_numpy(p)).numpy().reshape(c, n, d)


def ess_bulk(x: np.ndarray) -> np.ndarray:
    return _ess(_z_scale(split_chains(x)))


def ess_tail(x: np.ndarray) -> np.ndarray:
    c, n, d = x.shape
    q = np.quantile(x.reshape(c * n, d), [0.05, 0.95], axis=0)  # (2, d)
    low = _ess(split_chains((x <= q[0]).astype(float)))
    high = _ess(split_chains((x <= q[1]).astype(float)))
    return np.minimum(low, high)


def _rhat(z: np.ndarray) -> np.ndarray:
    n = z.shape[1]
    between = n * z.mean(axis=1).var(axis=0, ddof=1)
    within = z.var(axis=1, ddof=1).mean(axis=0)
    return np.sqrt((between / within + n - 1) / n)


def rhat(x: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat of each column (the larger of bulk and folded), as ArviZ's
    default; NaN with fewer than 2 chains or 4 draws."""
    c, n, d = x.shape
    if c < 2 or n < 4:
        return np.full(d, np.nan)
    split = split_chains(x)
    folded = np.abs(split - np.median(split.reshape(-1, d), axis=0))
    return np.maximum(_rhat(_z_scale(split)), _rhat(_z_scale(folded)))


def columns(values: np.ndarray) -> np.ndarray:
    """(chain, draw, *shape) -> (chain, draw, d)."""
    return values.reshape(values.shape[0], values.shape[1], -1)


def min_ess(x: np.ndarray) -> float:
    """min over coordinates of min(bulk, tail ESS) of x (chain, draw, d); NaN counts as 0."""
    if x.shape[1] < 4:
        return 0.0
    both = np.minimum(ess_bulk(x), ess_tail(x))
    return float(np.nan_to_num(both, nan=0.0).min())


def nested_rhat(x: np.ndarray, num_superchains: int) -> np.ndarray:
    """Nested R-hat (Margossian et al. 2024, eq. 17-19) of each column of x (chain, draw, d)
    whose chains come in ``num_superchains`` consecutive, equal groups that each started from
    one point: nR̂ = sqrt(1 + B̂ / Ŵ), B̂ the variance of the superchain means, Ŵ the mean over
    superchains of (the variance of its chain means + its mean within-chain variance)."""
    c, n, d = x.shape
    g = x.reshape(num_superchains, c // num_superchains, n, d)
    chain_mean = g.mean(2)  # (K, M, d)
    between_super = chain_mean.mean(1).var(0, ddof=1)
    between_chain = chain_mean.var(1, ddof=1) if g.shape[1] > 1 else 0.0
    within_chain = g.var(2, ddof=1).mean(1) if n > 1 else 0.0
    within = np.mean(between_chain + within_chain, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(within > 0, np.sqrt(1 + between_super / within), np.nan)
