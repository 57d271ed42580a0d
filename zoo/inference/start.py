"""A good start for many chains: L-BFGS towards the posterior's bulk, stopped at its edge.

A uniform draw on (-2, 2) in unconstrained space can be far from the posterior in a badly
scaled direction (a regression on uncentred years puts the intercept near −600 and the slope's
sd at 0.015, at correlation −0.9999); HMC from there spends its warmup on a step size the
start forces on it. Pathfinder (Zhang et al. 2022) follows an L-BFGS path from such a start and
keeps the point whose Gaussian approximation is best. This module keeps the part that pays
here: every chain runs its own L-BFGS (vectorised over chains, a backtracking Armijo line
search per chain) and stops as soon as it is *in* the bulk rather than at the mode:

    gᵀ H g ≤ d,

g the gradient of −log p and H the L-BFGS inverse Hessian — at a draw from a d-dimensional
Gaussian with covariance H, gᵀ H g is χ²_d with mean d. Stopping there, not at the mode,
keeps the chains' starts spread and keeps them out of a funnel's neck, where the mode of an
unbounded density lies. Where its memory spans every direction (d ≤ ``HISTORY``), H, averaged
over chains, is the warmup's first metric; beyond that it is mostly its isotropic guess γI,
and the warmup starts from the identity.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..gradient import ValueAndGrad

HISTORY = 6  # L-BFGS memory (Stan's default is 5; Pathfinder's 6)
ARMIJO = 1e-4
WOLFE = 0.9  # curvature condition: the slope has flattened to 90% of its start


class Start(NamedTuple):
    q: torch.Tensor  # (C, d) starting points
    inverse_hessian: torch.Tensor | None  # (d, d), averaged over chains; None without history
    iterations: int
    gradients: int


def two_loop(g: torch.Tensor, s: list[torch.Tensor], y: list[torch.Tensor],
             rho: list[torch.Tensor], gamma: torch.Tensor) -> torch.Tensor:
    """H g for every row (the L-BFGS two-loop recursion); pairs with rho = 0 do nothing.
    g (C, k) may carry k ≥ 1 vectors per chain as a trailing batch: s, y (C, d)."""
    q = g.clone()
    alphas = []
    for s_i, y_i, r_i in zip(reversed(s), reversed(y), reversed(rho)):
        a = r_i.unsqueeze(-1) * (s_i.unsqueeze(-1) * q).sum(-2)
        q = q - a.unsqueeze(-2) * y_i.unsqueeze(-1)
        alphas.append(a)
    r = gamma.reshape(-1, 1, 1) * q
    for (s_i, y_i, r_i), a in zip(zip(s, y, rho), reversed(alphas)):
        b = r_i.unsqueeze(-1) * (y_i.unsqueeze(-1) * r).sum(-2)
        r = r + s_i.unsqueeze(-1) * (a - b).unsqueeze(-2)
    return r


class _Found(NamedTuple):
    ok: torch.Tensor  # (C,) a step was accepted
    gradients: int


def _line_search(value_and_grad: ValueAndGrad, q, logp, g, direction, slope, active,
                 max_trials: int):
    """Per chain, a step along ``direction`` meeting Armijo's sufficient decrease; where the
    slope there is still steeper than ``WOLFE`` × the initial slope (Wolfe's curvature
    condition fails), the step doubles while −log p keeps falling.

    Backtracking alone takes the quadratic model's step at best, which on a log scale
    parameter far from its mode (−log p ∝ e^{−2s}, a regression in dollars started at
    sigma ≈ 1) is a tiny fraction of the way: the expansion crosses such a region in a few
    doublings instead of hundreds of iterations."""
    step = torch.ones(len(q), dtype=q.dtype)
    pending, found = active.clone(), torch.zeros_like(active)
    q_new, logp_new, g_new = q, logp, g
    trials = 0
    for _ in range(max_trials):
        trial = q + step.unsqueeze(-1) * direction
        lp_t, gr_t = value_and_grad(torch.where(pending.unsqueeze(-1), trial, q))
        trials += 1
        armijo = pending & torch.isfinite(lp_t) & torch.isfinite(gr_t).all(-1) & (
            -lp_t <= -logp + ARMIJO * step * slope)
        better = armijo & (~found | (lp_t > logp_new))  # while expanding: only if it improves
        q_new = torch.where(better.unsqueeze(-1), trial, q_new)
        logp_new = torch.where(better, lp_t, logp_new)
        g_new = torch.where(better.unsqueeze(-1), -gr_t, g_new)
        steep = (-gr_t * direction).sum(-1) < WOLFE * slope
        expand = better & steep
        backtrack = pending & ~armijo & ~found
        found |= better
        pending &= expand | backtrack
        if not bool(pending.any()):
            break
        step = torch.where(expand, 2.0 * step, torch.where(backtrack, 0.5 * step, step))
    return q_new, logp_new, g_new, _Found(found, trials)


def lbfgs_start(value_and_grad: ValueAndGrad, q0: torch.Tensor, max_iterations: int = 200,
                max_backtracks: int = 30) -> Start:
    """Each row of ``q0`` (C, d) moved by its own L-BFGS on −log p until gᵀHg ≤ d."""
    c, d = q0.shape
    q = q0.clone()
    logp, grad = value_and_grad(q)
    g = -grad  # gradient of the objective −log p
    s_hist: list[torch.Tensor] = []
    y_hist: list[torch.Tensor] = []
    rho_hist: list[torch.Tensor] = []
    gamma = 1.0 / g.norm(dim=-1).clamp_min(1.0)  # first step: at most unit length
    active = torch.isfinite(logp) & torch.isfinite(g).all(-1)
    gradients, it = 1, 0
    for it in range(1, max_iterations + 1):
        direction = -two_loop(g.unsqueeze(-1), s_hist, y_hist, rho_hist, gamma).squeeze(-1)
        slope = (g * direction).sum(-1)  # = −gᵀHg < 0
        # H means something once a step has measured curvature: test only from then on
        active &= ((-slope > d) | (not s_hist)) & (slope < 0)
        if not bool(active.any()):
            break
        q_new, logp_new, g_new, search = _line_search(value_and_grad, q, logp, g, direction,
                                                      slope, active, max_backtracks)
        gradients += search.gradients
        moved = search.ok  # chains whose line search failed stop where they are
        active &= moved
        s, y = q_new - q, g_new - g
        sy = (s * y).sum(-1)
        valid = moved & (sy > 1e-10 * (y * y).sum(-1).clamp_min(1e-300))
        rho = torch.where(valid, 1.0 / torch.where(valid, sy, 1.0), 0.0)
        s_hist.append(torch.where(valid.unsqueeze(-1), s, 0.0))
        y_hist.append(torch.where(valid.unsqueeze(-1), y, 0.0))
        rho_hist.append(rho)
        gamma = torch.where(valid, sy / (y * y).sum(-1).clamp_min(1e-300), gamma)
        if len(s_hist) > HISTORY:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        q, logp, g = q_new, logp_new, g_new
    inverse_hessian = None
    if s_hist and d <= HISTORY:  # beyond that H is mostly its isotropic guess γI
        eye = torch.eye(d, dtype=q.dtype).expand(c, d, d)
        h = two_loop(eye, s_hist, y_hist, rho_hist, gamma)  # (C, d, d)
        inverse_hessian = 0.5 * (h + h.transpose(-1, -2)).mean(0)
    return Start(q, inverse_hessian, it, gradients)
