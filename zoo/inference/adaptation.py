"""Warmup for many-chain HMC: step size, metric and trajectory length, adapted from the pooled
chains, stopping as soon as adaptation has settled (BlackJAX keeps adaptation apart from kernels).

* Step size ε: dual averaging (Hoffman & Gelman 2014) towards a *harmonic* mean acceptance of
  ``target_accept`` over chains (divergent ones left out), so a few struggling chains pull ε
  down rather than being averaged away.
* Trajectory length T: Adam on log T ascending the ChEES criterion
  ``¼ E[(‖θ' − E θ'‖² − ‖θ − E θ‖²)²]`` (Hoffman, Radul & Sountsov 2021), per chain
  ``t (‖θ' − θ̄'‖² − ‖θ − θ̄‖²) (θ' − θ̄')·v'`` averaged with acceptance weights, in the metric's
  whitened coordinates so it does not depend on the parameters' units.
* Metric Σ, re-estimated at the end of each window from every chain's positions *and gradients*
  in it: the Σ minimising the Fisher divergence between the posterior and a Gaussian
  (nutpie: Seyboldt, Carlson & Carpenter): diagonal Σᵢ = sqrt(Var θᵢ / Var ∂ᵢ log p), or dense,
  the geometric mean of Cov θ and Cov(∇ log p)⁻¹, when positions or gradients correlate beyond
  ``DENSE_CORRELATION`` (a regression on uncentred years) and the window has draws enough to
  estimate it (10 per coordinate) — ``metric = "auto"``, the default.

``warmup = "adaptive"`` (the default) runs windows of 25, 50, 50, 100, 200, … iterations and
stops at the end of the first window, from the second on, where (a) the metric it estimates is
within a factor ``SETTLED`` of the one in use on every coordinate, so changing it would not pay,
and (b) the superchains agree on every coordinate: nested R-hat (Margossian et al. 2024) of the
window's draws below 1.01. An easy posterior stops after 75 iterations; a hard one keeps going
up to ``num_warmup``. (Divergences are not a criterion: dual averaging tries steps past a small
posterior's stability limit while it searches, and those diverge whatever the posterior.)
``warmup = "fixed"`` runs exactly ``num_warmup`` iterations on Stan's window schedule.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple

import numpy as np
import torch

from .hmc import Metric, Sampler, halton, num_steps
from .convergence import nested_rhat

LOG_T_CLIP = 0.35  # at most a ×1.4 change of T per iteration (as TFP and BlackJAX)
DENSE_CORRELATION = 0.95  # |correlation| above which "auto" takes a dense metric
DENSE_DRAWS_PER_DIM = 10  # draws per coordinate a dense estimate needs to beat a diagonal one
DENSE_MAX_DIM = 500  # beyond this a dense metric's O(d²) per leapfrog step costs too much
SETTLED = 2.0  # a new metric within this factor of the old on every coordinate changes nothing
RHAT_SETTLED = 1.01
END_BUFFER = 50  # iterations with the last metric when warmup runs to its end


class DualAveraging:
    """Nesterov dual averaging of log ε (Hoffman & Gelman 2014, with Stan's constants)."""

    def __init__(self, step_size: float, target: float, gamma=0.05, t0=10.0, kappa=0.75):
        self.mu, self.target = math.log(10 * step_size), target
        self.gamma, self.t0, self.kappa = gamma, t0, kappa
        self.t, self.h_bar, self.log_avg = 0, 0.0, 0.0

    def update(self, accept: float) -> float:
        self.t += 1
        eta = 1.0 / (self.t + self.t0)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept)
        log_step = self.mu - math.sqrt(self.t) / self.gamma * self.h_bar
        w = self.t ** -self.kappa
        self.log_avg = w * log_step + (1 - w) * self.log_avg
        return math.exp(log_step)

    @property
    def final(self) -> float:
        return math.exp(self.log_avg)


class TrajectoryAdam:
    """Adam on log T (no momentum, β₂ = 0.95) with clipped steps, plus a running average of
    log T (weight t^-½, as BlackJAX) that gives the length used after warmup."""

    def __init__(self, length: float, lr: float, beta2: float = 0.95):
        self.log_t, self.lr, self.beta2 = math.log(length), lr, beta2
        self.v, self.t, self.log_avg = 0.0, 0, math.log(length)

    def update(self, grad: float) -> float:
        self.t += 1
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad**2
        v_hat = self.v / (1 - self.beta2**self.t)
        step = self.lr * grad / (math.sqrt(v_hat) + 1e-12)
        self.log_t += max(-LOG_T_CLIP, min(LOG_T_CLIP, step))
        w = self.t**-0.5
        self.log_avg = w * self.log_t + (1 - w) * self.log_avg
        return math.exp(self.log_t)

    @property
    def final(self) -> float:
        return math.exp(self.log_avg)


def chees_gradient(stats: Mapping[str, torch.Tensor], metric: Metric, length: float) -> float:
    """The acceptance-weighted ChEES gradient in log T (whitened coordinates)."""
    w = torch.where(stats["diverging"], 0.0, stats["accept_prob"])
    if float(w.sum()) <= 0:
        return 0.0
    x0 = metric.whiten(stats["initial"])
    x1 = metric.whiten(stats["proposal"])
    v1 = metric.whiten(stats["velocity"])
    c0 = x0 - x0.mean(0)
    c1 = x1 - (w.unsqueeze(-1) * x1).sum(0) / w.sum()
    per_chain = length * ((c1**2).sum(-1) - (c0**2).sum(-1)) * (c1 * v1).sum(-1)
    g = float((w * per_chain).sum() / w.sum())
    return g if math.isfinite(g) else 0.0


def harmonic_mean_accept(stats: Mapping[str, torch.Tensor]) -> float:
    a = stats["accept_prob"][~stats["diverging"]]
    if a.numel() == 0 or bool((a <= 0).any()):
        return 0.0
    return float(1.0 / (1.0 / a).mean())


def metric_windows(num_warmup: int) -> list[tuple[int, int]]:
    """Stan's schedule scaled to ``num_warmup``: a 15% start with the identity metric, windows
    doubling from 25 iterations (the last stretched), and a 10% end with the final metric."""
    start, end = int(0.15 * num_warmup), num_warmup - int(0.1 * num_warmup)
    windows, lo, size = [], start, 25
    while lo < end:
        hi = lo + size
        if hi + 2 * size > end:  # the next window would not fit: this one takes the rest
            hi = end
        windows.append((lo, hi))
        lo, size = hi, 2 * size
    return windows if num_warmup >= 20 else []


def adaptive_windows(num_warmup: int) -> list[tuple[int, int]]:
    """Windows of 25, 50, 50, 100, 200, … iterations from the start, leaving ``END_BUFFER``
    iterations after the last for ε to settle on the final metric."""
    windows, lo = [], 0
    for size in _sizes():
        if lo + size > num_warmup - END_BUFFER:
            break
        windows.append((lo, lo + size))
        lo += size
    return windows


def _sizes():
    yield from (25, 50, 50)
    size = 100
    while True:
        yield size
        size *= 2


def estimate_metric(q: torch.Tensor, g: torch.Tensor, kind: str) -> Metric:
    """Σ from positions q and log-density gradients g, both (n, d), pooled over chains and a
    window: the Σ that minimises the Fisher divergence to a Gaussian, i.e. solves
    Σ Cov(g) Σ = Cov(q) (nutpie). Diagonal: Σᵢ = sqrt(Var qᵢ / Var gᵢ); dense: the geometric
    mean of Cov(q) and Cov(g)⁻¹. For a Gaussian posterior both Cov(q) and Cov(g)⁻¹ are its
    covariance; far from the typical set, where the chains have hardly moved, the gradients
    still carry the curvature. ``kind``: "diag" (Fisher), "dense", "variance" (Stan's diagonal:
    Var q alone) or "auto" (dense when positions or gradients correlate strongly and there are
    draws enough, else "diag")."""
    n, d = q.shape
    if kind == "auto":
        enough = 1 < d <= DENSE_MAX_DIM and n >= DENSE_DRAWS_PER_DIM * d  # else Cov is noise
        strong = enough and max(max_correlation(q), max_correlation(g)) > DENSE_CORRELATION
        kind = "dense" if strong else "diag"
    if kind == "dense":
        return Metric(fisher_dense(_cov(q), _cov(g)))
    if kind == "variance":  # Stan's: the draws' variance, shrunk a little towards 1e-3
        return Metric(n / (n + 5.0) * q.var(0) + 1e-3 * 5.0 / (n + 5.0))
    fisher = (q.var(0) / g.var(0)).sqrt()
    diag = torch.where(torch.isfinite(fisher) & (fisher > 0), fisher, q.var(0))
    return Metric(diag.clamp(1e-10, 1e10))


def _cov(x: torch.Tensor) -> torch.Tensor:
    """Covariance of x (n, d), nudged towards its diagonal (1e-3 relative) so it is positive
    definite even from few or stuck draws."""
    d = x.shape[1]
    cov = torch.cov(x.T).reshape(d, d)
    scale = cov.diagonal().clamp_min(1e-12)
    return cov + 1e-3 * torch.diag(scale) + 1e-12 * scale.mean() * torch.eye(d, dtype=x.dtype)


def _sqrt(a: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    w, v = torch.linalg.eigh(a)
    return (v * w.clamp_min(1e-300) ** power) @ v.T


def fisher_dense(cov_q: torch.Tensor, cov_g: torch.Tensor) -> torch.Tensor:
    """Σ with Σ cov_g Σ = cov_q: Σ = G^-½ (G^½ C G^½)^½ G^-½ for G = cov_g, C = cov_q."""
    g_half, g_inv_half = _sqrt(cov_g), _sqrt(cov_g, -0.5)
    sigma = g_inv_half @ _sqrt(g_half @ cov_q @ g_half) @ g_inv_half
    return 0.5 * (sigma + sigma.T)


def initial_metric(inverse_hessian: torch.Tensor | None, dim: int, kind: str, dtype) -> Metric:
    """The first metric: the start's L-BFGS inverse Hessian (dense where ``kind`` is "dense",
    or "auto" and its correlations are strong), else the identity."""
    if inverse_hessian is None or not bool(torch.isfinite(inverse_hessian).all()):
        return Metric.identity(dim, kind == "dense", dtype)
    var = inverse_hessian.diagonal().clamp(1e-10, 1e10)
    corr = inverse_hessian / (var.sqrt().unsqueeze(0) * var.sqrt().unsqueeze(1))
    strong = float((corr - torch.diag(corr.diagonal())).abs().max()) > DENSE_CORRELATION
    if kind == "dense" or (kind == "auto" and 1 < dim <= DENSE_MAX_DIM and strong):
        try:
            return Metric(inverse_hessian)
        except RuntimeError:  # not positive definite after all: its diagonal will do
            pass
    return Metric(var)


def max_correlation(x: torch.Tensor) -> float:
    c = torch.corrcoef(x.T)
    c = torch.nan_to_num(c - torch.diag(c.diagonal()), nan=0.0)
    return float(c.abs().max())


class Warmup(NamedTuple):
    step_size: float
    trajectory_length: float
    iterations: int
    stopped_early: bool
    metric: str  # "diag" or "dense"


def warmup(sampler: Sampler, config, num_superchains: int, tick=lambda: None,
           whitened: bool = False) -> Warmup:
    """Adapt ε, Σ and T on ``sampler``'s chains in place (``config``: CheesSettings).
    ``whitened``: the sampler's metric already has the posterior's scale (from the start)."""
    kind = "dense" if config.dense_mass else config.metric
    adaptive = config.warmup == "adaptive"
    windows = adaptive_windows(config.num_warmup) if adaptive else metric_windows(config.num_warmup)
    ends = {hi - 1: i for i, (_, hi) in enumerate(windows)}
    starts = {lo for lo, _ in windows}
    step_size = sampler.find_step_size(0.1)
    dual = DualAveraging(step_size, config.target_accept)
    # one step until a metric gives the posterior's scale; then ~1 (a quarter period of a
    # unit-scale Gaussian is π/2) is a better start
    length = min(max(1.0, step_size), config.max_leapfrog * step_size) if whitened else step_size
    trajectory = TrajectoryAdam(length, config.trajectory_lr)
    window_q: list[torch.Tensor] = []
    window_g: list[torch.Tensor] = []
    stopped, it = False, 0
    for it in range(config.num_warmup):
        h = halton(it + 1)
        stats = sampler.transition(step_size, num_steps(h, length, step_size, config.max_leapfrog))
        step_size = dual.update(harmonic_mean_accept(stats))
        g = chees_gradient(stats, sampler.metric, h * length)
        length = min(max(trajectory.update(g), step_size), config.max_leapfrog * step_size)
        trajectory.log_t = math.log(length)
        if it in starts:
            window_q, window_g = [], []
        window_q.append(sampler.q)
        window_g.append(sampler.grad)
        tick()
        if it not in ends:
            continue
        q, grads = torch.cat(window_q), torch.cat(window_g)
        new = estimate_metric(q, grads, kind)
        if adaptive and ends[it] >= 1 and settled(new, sampler.metric) and mixed(
                torch.stack(window_q, 1), num_superchains):
            stopped = True
            break
        sampler.metric = new
        step_size = sampler.find_step_size(step_size)
        dual = DualAveraging(step_size, config.target_accept)
        if adaptive and ends[it] == 0 and not whitened:
            length = min(max(1.0, step_size), config.max_leapfrog * step_size)
            trajectory = TrajectoryAdam(length, config.trajectory_lr)
    if config.num_warmup:
        step_size, length = dual.final, min(trajectory.final, config.max_leapfrog * dual.final)
    return Warmup(step_size, length, it + 1 if config.num_warmup else 0, stopped,
                  "dense" if sampler.metric.dense else "diag")


def settled(new: Metric, old: Metric) -> bool:
    """Every coordinate's variance within a factor ``SETTLED`` of the metric in use (and the
    same kind, diagonal or dense)."""
    if new.dense != old.dense:
        return False
    ratio = (new.variances / old.variances).log().abs().max()
    return bool(ratio < math.log(SETTLED))


def mixed(draws: torch.Tensor, num_superchains: int) -> bool:
    """Nested R-hat of draws (chain, draw, d) below ``RHAT_SETTLED`` on every coordinate."""
    if num_superchains < 2 or draws.shape[0] == num_superchains:
        return True  # one chain per superchain: nothing nested to compare (checked after)
    r = nested_rhat(draws.cpu().numpy(), num_superchains)
    return bool(np.all(r < RHAT_SETTLED))
