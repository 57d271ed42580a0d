"""Many chains at once: jittered HMC tuned by ChEES (Hoffman, Radul & Sountsov 2021).

Pyro's NUTS pays Python overhead for every gradient of every chain. Here C chains move
together: the log density and its gradient for all C come from one pass of the model under an
outer plate (``LogJoint.batched``, traced by ``torch.jit``), so that overhead is paid once per
C chains. There is no per-chain NUTS tree: every chain takes the same number of leapfrog steps,
and the trajectory length is tuned across chains instead.

Warmup (``num_warmup`` iterations), everything adapted from the pooled chains:

* step size ε by dual averaging (Hoffman & Gelman 2014) towards a *harmonic* mean acceptance
  of ``target_accept`` over chains (divergent ones left out), so a few struggling chains pull
  ε down rather than being averaged away;
* inverse metric Σ = the variance (or covariance, ``dense_mass``) of every chain's position
  pooled over a window of iterations; windows double as in Stan, and after each update ε is
  found afresh and dual averaging restarts;
* trajectory length T by Adam on log T ascending the ChEES criterion
  ``¼ E[(‖θ' − E θ'‖² − ‖θ − E θ‖²)²]``, whose per-chain gradient in log T is
  ``t (‖θ' − θ̄'‖² − ‖θ − θ̄‖²) (θ' − θ̄')·v'`` (t the jittered length, v' the velocity at the
  proposal θ'), averaged with acceptance-probability weights; distances are measured in the
  metric's whitened coordinates so the criterion does not depend on the parameters' units.

Every iteration jitters its length: ``ceil(h_k T / ε)`` steps with h_k the base-2 Halton
sequence, which spreads lengths evenly over (0, T] and breaks periodic orbits.

Chains come in ``num_superchains`` groups that start from one point each, as nested R-hat
(Margossian et al. 2024) needs to judge many short chains.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import Callable, Mapping

import numpy as np
import torch

from ..errors import ConvergenceWarning, ZooError
from ..logdensity import LogJoint, NotVectorisable, generator
from ..registry import ModelSpec
from .base import RunOutput
from .settings import CheesSettings

MAX_ENERGY_ERROR = 1000.0  # Stan's divergence threshold on H(q', p') − H(q, p)
LOG_T_CLIP = 0.35  # at most a ×1.4 change of T per iteration (as TFP and BlackJAX)


class Metric:
    """Inverse mass matrix Σ: momentum p ~ N(0, Σ⁻¹), velocity v = Σ p, kinetic ½ pᵀΣp."""

    def __init__(self, cov: torch.Tensor):
        self.dense = cov.dim() == 2
        self.cov = cov
        self.chol = torch.linalg.cholesky(cov) if self.dense else cov.sqrt()  # Σ = L Lᵀ

    @classmethod
    def identity(cls, dim: int, dense: bool, dtype) -> "Metric":
        return cls(torch.eye(dim, dtype=dtype) if dense else torch.ones(dim, dtype=dtype))

    def momentum(self, z: torch.Tensor) -> torch.Tensor:
        """p = L⁻ᵀ z for standard normal z, so Cov p = Σ⁻¹."""
        if not self.dense:
            return z / self.chol
        return torch.linalg.solve_triangular(self.chol.T, z.T, upper=True).T

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        return p @ self.cov if self.dense else p * self.cov

    def kinetic(self, p: torch.Tensor) -> torch.Tensor:
        return 0.5 * (p * self.velocity(p)).sum(-1)

    def whiten(self, x: torch.Tensor) -> torch.Tensor:
        """L⁻¹ x: coordinates in which the metric is the identity."""
        if not self.dense:
            return x / self.chol
        return torch.linalg.solve_triangular(self.chol, x.T, upper=False).T


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


def halton(index: int) -> float:
    """The base-2 van der Corput number of ``index`` ≥ 1, in (0, 1)."""
    out, f = 0.0, 0.5
    while index:
        out += f * (index & 1)
        index >>= 1
        f /= 2
    return out


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


class Sampler:
    """The chains' state and one jittered-HMC transition for all of them."""

    def __init__(self, log_density: Callable, q: torch.Tensor, metric: Metric, gen: torch.Generator):
        self.log_density, self.metric, self.gen = log_density, metric, gen
        self.q = q
        self.logp, self.grad = self.value_and_grad(q)
        self.num_gradients = 0

    def value_and_grad(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = q.detach().requires_grad_(True)
        logp = self.log_density(q)
        (grad,) = torch.autograd.grad(logp.sum(), q)
        return logp.detach(), grad

    def transition(self, step_size: float, num_steps: int) -> dict[str, torch.Tensor]:
        """num_steps leapfrog steps of size step_size for every chain, then Metropolis."""
        metric, eps = self.metric, step_size
        p0 = metric.momentum(torch.randn(self.q.shape, generator=self.gen, dtype=self.q.dtype))
        energy0 = -self.logp + metric.kinetic(p0)
        q, p, logp, grad = self.q, p0, self.logp, self.grad
        diverged = torch.zeros(q.shape[0], dtype=torch.bool)
        for _ in range(num_steps):
            p_half = p + 0.5 * eps * grad
            q_new = q + eps * metric.velocity(p_half)
            logp_new, grad_new = self.value_and_grad(q_new)
            p_new = p_half + 0.5 * eps * grad_new
            bad = ~(-logp_new + metric.kinetic(p_new) - energy0 < MAX_ENERGY_ERROR)  # NaN is bad
            diverged |= bad
            # A diverged chain stops where it was (its proposal is rejected anyway), so no
            # NaN reaches the model or the other chains' statistics.
            keep = diverged.unsqueeze(-1)
            q, p = torch.where(keep, q, q_new), torch.where(keep, p, p_new)
            logp, grad = torch.where(diverged, logp, logp_new), torch.where(keep, grad, grad_new)
        self.num_gradients += num_steps
        log_accept = torch.clamp(energy0 - (-logp + metric.kinetic(p)), max=0.0)
        log_accept = torch.where(diverged | torch.isnan(log_accept), -math.inf, log_accept)
        accept_prob = log_accept.exp()
        u = torch.rand(q.shape[0], generator=self.gen, dtype=q.dtype)
        accepted = u < accept_prob
        initial = self.q
        a = accepted.unsqueeze(-1)
        self.q = torch.where(a, q, self.q)
        self.logp = torch.where(accepted, logp, self.logp)
        self.grad = torch.where(a, grad, self.grad)
        return {"initial": initial, "proposal": q, "velocity": metric.velocity(p),
                "accept_prob": accept_prob, "diverging": diverged, "energy": energy0}

    def find_step_size(self, step_size: float) -> float:
        """Double or halve ε until one leapfrog step's mean acceptance crosses ½ (Stan)."""
        q, logp, grad = self.q, self.logp, self.grad
        direction = 0
        for _ in range(60):
            stats = self.transition(step_size, 1)
            self.q, self.logp, self.grad = q, logp, grad  # a probe, not a move
            accept = float(stats["accept_prob"].mean())
            new = 1 if accept > 0.5 else -1
            if direction and new != direction:
                break
            direction = new
            step_size *= 2.0**direction
        return step_size


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


def pooled_metric(positions: list[torch.Tensor], dense: bool) -> Metric:
    """Σ from all chains' positions over a window, shrunk towards 1e-3·I as Stan does."""
    x = torch.cat(positions)
    n = x.shape[0]
    if dense:
        cov = torch.cov(x.T).reshape(x.shape[1], x.shape[1])
        cov = n / (n + 5.0) * cov + 1e-3 * 5.0 / (n + 5.0) * torch.eye(x.shape[1], dtype=x.dtype)
        return Metric(cov)
    return Metric(n / (n + 5.0) * x.var(0) + 1e-3 * 5.0 / (n + 5.0))


def default_superchains(num_chains: int) -> int:
    """8 superchains when the chains divide into groups of at least 2, else fewer; a handful
    of chains is each its own superchain (then plain R-hat applies)."""
    return next((k for k in (8, 6, 4, 3, 2) if num_chains % k == 0 and num_chains >= 4 * k),
                num_chains)


def initial_points(spec: ModelSpec, data: Mapping, lj: LogJoint, num_chains: int,
                   num_superchains: int, init_strategy: str) -> torch.Tensor:
    """One start per superchain from Pyro's init strategy, repeated for its chains."""
    from .laplace import potential

    starts = []
    for _ in range(num_superchains):
        _, u0, flat, _ = potential(spec, data, init_strategy)
        starts.append(lj.flat.flatten(flat.unflatten(u0)))
    return torch.stack(starts).repeat_interleave(num_chains // num_superchains, dim=0)


def run_chees(spec: ModelSpec, data: Mapping, config: CheesSettings, seed: int = 0,
              progress: bool = False) -> RunOutput:
    superchains = config.num_superchains or default_superchains(config.num_chains)
    if config.num_chains % superchains:
        raise ZooError(f"chees: num_chains ({config.num_chains}) must be a multiple of "
                       f"num_superchains ({superchains})")
    t_start = time.perf_counter()
    try:
        lj = LogJoint(spec, data)
    except NotImplementedError as e:  # biject_to has no map for a discrete support
        raise NotVectorisable(f"a latent site is discrete ({e})") from e
    log_density, how = lj.batched(config.num_chains, jit=config.jit, seed=seed)
    dtype = torch.get_default_dtype()
    gen = generator(seed)  # on the device the run is on (zoo.fit's torch.device context)
    sampler = Sampler(log_density, initial_points(spec, data, lj, config.num_chains, superchains,
                                                  config.init_strategy),
                      Metric.identity(lj.dim, config.dense_mass, dtype), gen)
    t_setup = time.perf_counter()

    bar = _bar(progress, config, spec.name)
    windows = metric_windows(config.num_warmup)
    step_size = sampler.find_step_size(0.1)
    dual = DualAveraging(step_size, config.target_accept)
    trajectory = TrajectoryAdam(step_size, config.trajectory_lr)
    length, window_draws, k = step_size, [], 0
    for it in range(config.num_warmup):
        k += 1
        n_steps = _num_steps(halton(k), length, step_size, config.max_leapfrog)
        stats = sampler.transition(step_size, n_steps)
        step_size = dual.update(harmonic_mean_accept(stats))
        g = chees_gradient(stats, sampler.metric, halton(k) * length)
        length = min(max(trajectory.update(g), step_size), config.max_leapfrog * step_size)
        trajectory.log_t = math.log(length)
        if any(lo <= it < hi for lo, hi in windows):
            window_draws.append(sampler.q)
        if any(it == hi - 1 for _, hi in windows):  # a window closed: new metric, new ε
            sampler.metric = pooled_metric(window_draws, config.dense_mass)
            window_draws = []
            step_size = sampler.find_step_size(step_size)
            dual = DualAveraging(step_size, config.target_accept)
        _tick(bar)
    if config.num_warmup:
        step_size, length = dual.final, min(trajectory.final, config.max_leapfrog * dual.final)
    t_warmup = time.perf_counter()
    warmup_gradients = sampler.num_gradients

    draws, records = [], []
    for _ in range(config.num_samples):
        k += 1
        n_steps = _num_steps(halton(k), length, step_size, config.max_leapfrog)
        stats = sampler.transition(step_size, n_steps)
        draws.append(sampler.q)
        records.append({"diverging": stats["diverging"], "energy": stats["energy"],
                        "lp": sampler.logp, "acceptance_rate": stats["accept_prob"],
                        "n_steps": torch.full_like(sampler.logp, n_steps)})
        _tick(bar)
    if bar is not None:
        bar.close()
    t_end = time.perf_counter()

    # Results go back to the CPU (no-ops there), where everything after inference runs.
    u = torch.stack(draws, dim=1)  # (chain, draw, d)
    c, s = u.shape[:2]
    latents = {k: v.reshape((c, s) + v.shape[1:]).cpu() for k, v in
               lj.to_constrained(u.reshape(c * s, -1)).items()}
    sample_stats = {key: torch.stack([r[key] for r in records], dim=1).cpu().numpy()
                    for key in records[0]} if records else {}
    if sample_stats:
        sample_stats["diverging"] = sample_stats["diverging"].astype(bool)
        sample_stats["step_size"] = np.full((c, s), step_size)
    out_warnings = _warnings(sample_stats, config, spec.name)
    info = {
        "log_density": how,
        "step_size": step_size,
        "trajectory_length": length,
        "mean_leapfrog_steps": float(np.mean(sample_stats["n_steps"][0])) if sample_stats else 0.0,
        "num_superchains": superchains,
        "num_divergences": int(sample_stats["diverging"].sum()) if sample_stats else 0,
        "gradients_warmup": warmup_gradients,
        "gradients_sampling": sampler.num_gradients - warmup_gradients,
        "time_setup_s": t_setup - t_start,  # tracing, checks, initial points
        "time_warmup_s": t_warmup - t_setup,
        "time_sampling_s": t_end - t_warmup,
        "inverse_metric": sampler.metric.cov.cpu().numpy(),
    }
    return RunOutput(latents, sample_stats, info, out_warnings)


def _num_steps(h: float, length: float, step_size: float, cap: int) -> int:
    return int(min(max(math.ceil(h * length / step_size), 1), cap))


def _warnings(stats: Mapping[str, np.ndarray], config: CheesSettings, name: str) -> list[str]:
    out = []
    if stats:
        n_div = int(stats["diverging"].sum())
        if n_div:
            out.append(
                f"{n_div} divergent transitions after warmup ({n_div / stats['diverging'].size:.1%}); "
                "the posterior is not explored reliably (reparameterise, e.g. non-centered, or "
                "raise target_accept)")
        capped = float((stats["n_steps"][0] >= config.max_leapfrog).mean())
        if capped:
            out.append(f"{capped:.0%} of transitions hit max_leapfrog={config.max_leapfrog}")
    for w in out:
        warnings.warn(f"{name} chees: {w}", ConvergenceWarning, stacklevel=3)
    return out


def _bar(progress: bool, config: CheesSettings, name: str):
    if not (progress and sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.num_warmup + config.num_samples, desc=f"chees {name}", leave=False)


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)
