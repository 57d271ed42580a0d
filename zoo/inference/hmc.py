"""The many-chain HMC kernel: C chains, one jittered-length leapfrog trajectory each, moved
together by one call of the batched value-and-gradient per leapfrog step.

Numerics only (BlackJAX's split of kernels from adaptation): the metric, the transition and
the step-size search. Warmup lives in ``adaptation``, the driver in ``chees``.
"""

from __future__ import annotations

import math

import torch

from ..gradient import ValueAndGrad

MAX_ENERGY_ERROR = 1000.0  # Stan's divergence threshold on H(q', p') − H(q, p)


class Metric:
    """Inverse mass matrix Σ: momentum p ~ N(0, Σ⁻¹), velocity v = Σ p, kinetic ½ pᵀΣp."""

    def __init__(self, cov: torch.Tensor):
        self.dense = cov.dim() == 2
        self.cov = cov
        self.chol = torch.linalg.cholesky(cov) if self.dense else cov.sqrt()  # Σ = L Lᵀ

    @classmethod
    def identity(cls, dim: int, dense: bool, dtype) -> "Metric":
        return cls(torch.eye(dim, dtype=dtype) if dense else torch.ones(dim, dtype=dtype))

    @property
    def variances(self) -> torch.Tensor:
        return self.cov.diagonal() if self.dense else self.cov

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


def halton(index: int) -> float:
    """The base-2 van der Corput number of ``index`` ≥ 1, in (0, 1)."""
    out, f = 0.0, 0.5
    while index:
        out += f * (index & 1)
        index >>= 1
        f /= 2
    return out


def num_steps(h: float, length: float, step_size: float, cap: int) -> int:
    """Leapfrog steps for the jittered length h·T (at least 1, at most ``cap``)."""
    return int(min(max(math.ceil(h * length / step_size), 1), cap))


class Sampler:
    """The chains' state (position, log density, gradient) and one jittered-HMC transition."""

    def __init__(self, value_and_grad: ValueAndGrad, q: torch.Tensor, metric: Metric,
                 gen: torch.Generator):
        self.value_and_grad, self.metric, self.gen = value_and_grad, metric, gen
        self.q = q
        self.logp, self.grad = value_and_grad(q)
        self.num_gradients = 0

    def transition(self, step_size: float, n_steps: int) -> dict[str, torch.Tensor]:
        """n_steps leapfrog steps of size step_size for every chain, then Metropolis."""
        metric, eps = self.metric, step_size
        p0 = metric.momentum(torch.randn(self.q.shape, generator=self.gen, dtype=self.q.dtype))
        energy0 = -self.logp + metric.kinetic(p0)
        q, p, logp, grad = self.q, p0, self.logp, self.grad
        diverged = torch.zeros(q.shape[0], dtype=torch.bool)
        for _ in range(n_steps):
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
        self.num_gradients += n_steps
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
