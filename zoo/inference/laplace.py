"""Laplace approximation in unconstrained space.

With U(u) = −log p(y, T⁻¹(u)) − log|det J_{T⁻¹}(u)| (Pyro's potential energy: the log joint
with the Jacobian of the map to constrained space), find the mode û (Adam, then an L-BFGS
polish) and H = ∇²U(û); the posterior is approximated by N(û, H⁻¹) in unconstrained space and
draws are mapped back through each site's transform. When H is not positive definite the error
names the site whose direction has the most negative curvature.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
from pyro.infer.mcmc.util import initialize_model

from .. import tracing
from ..errors import NotPositiveDefiniteError, ZooError
from ..registry import ModelSpec
from .base import INIT_STRATEGIES, RunOutput
from .settings import LaplaceSettings


class Flat:
    """Flatten a dict of unconstrained site values into one vector and back."""

    def __init__(self, params: Mapping[str, torch.Tensor]):
        self.names = list(params)
        self.shapes = [params[n].shape for n in self.names]
        self.sizes = [max(int(math.prod(s)), 1) for s in self.shapes]

    def flatten(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        """``u`` shaped (..., d) -> site -> (..., *shape)."""
        parts = torch.split(u, self.sizes, dim=-1)
        return {n: p.reshape(u.shape[:-1] + s) for n, p, s in zip(self.names, parts, self.shapes)}

    def label(self, index: int) -> str:
        """The site (and element) that coordinate ``index`` belongs to, e.g. ``theta[3]``."""
        for name, size, shape in zip(self.names, self.sizes, self.shapes):
            if index < size:
                return f"{name}[{index}]" if len(shape) else name
            index -= size
        raise IndexError(index)


def potential(spec: ModelSpec, data: Mapping, init_strategy: str = "median"):
    """(potential U on a flat vector, initial flat vector, Flat, transforms)."""
    # Pyro guesses the plate nesting from a prior draw, which improper priors cannot give.
    nesting = tracing.max_plate_nesting(tracing.structure(spec.fn, data))
    init, potential_fn, transforms, _ = initialize_model(
        spec.fn, model_kwargs=dict(data), init_strategy=INIT_STRATEGIES[init_strategy],
        max_plate_nesting=nesting,
    )
    flat = Flat(init)
    return (lambda u: potential_fn(flat.unflatten(u))), flat.flatten(init).detach(), flat, transforms


def find_mode(U, u0: torch.Tensor, config: LaplaceSettings, model: str = "model") -> torch.Tensor:
    """Adam from ``u0`` (robust far from the mode), then L-BFGS (fast and precise near it)."""
    u = u0.clone().requires_grad_(True)
    adam = torch.optim.Adam([u], lr=config.lr)
    for step in range(config.adam_steps):
        adam.zero_grad()
        loss = U(u)
        if not torch.isfinite(loss):
            raise ZooError(
                f"laplace on model {model!r}: the log density has no finite mode (it became "
                f"{-float(loss)} after {step} optimiser steps), e.g. a funnel whose density is "
                "unbounded; reparameterise or use method 'nuts'"
            )
        loss.backward()
        adam.step()
    if config.lbfgs_steps:
        lbfgs = torch.optim.LBFGS([u], max_iter=config.lbfgs_steps, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure():
            lbfgs.zero_grad()
            loss = U(u)
            loss.backward()
            return loss

        lbfgs.step(closure)
    return u.detach()


def hessian(U, u: torch.Tensor, rel_step: float = 1e-5) -> torch.Tensor:
    """∇²U(u) by central differences of autograd gradients, symmetrised.

    Not ``torch.autograd.functional.hessian``: torch writes several log-densities with
    ``abs``/``clamp`` (e.g. Binomial's log1p(exp(−|logits|))), whose second derivative autograd
    gets wrong exactly at the kink, and a symmetric data set puts the mode exactly there (a
    Beta–Binomial with 50 of 100 lost its whole likelihood curvature). Gradients are right
    there, so differencing them is; the O(h²) error is ~1e-10 relative."""

    def grad(x):
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(U(x), x)[0]

    d = u.numel()
    cols = []
    for j in range(d):
        h = rel_step * max(1.0, abs(float(u[j])))
        e = torch.zeros(d, dtype=u.dtype)
        e[j] = h
        cols.append((grad(u + e) - grad(u - e)) / (2 * h))
    H = torch.stack(cols, dim=1)
    return 0.5 * (H + H.T)


def cholesky_or_explain(H: torch.Tensor, flat: Flat, model: str) -> torch.Tensor:
    """Lower Cholesky factor of H, or an error naming the least curved direction."""
    L, info = torch.linalg.cholesky_ex(H)
    if info == 0 and torch.isfinite(L).all():
        return L
    evals, evecs = torch.linalg.eigh(H)
    worst = int(torch.argmin(evals))
    weights = evecs[:, worst].abs()
    top = torch.argsort(weights, descending=True)[:3]
    direction = ", ".join(f"{flat.label(int(i))} ({float(weights[i]):.2f})" for i in top)
    raise NotPositiveDefiniteError(
        f"laplace on model {model!r}: the Hessian at the mode is not positive definite "
        f"(eigenvalue {float(evals[worst]):.3g} along unconstrained {direction}); the mode is "
        "a saddle or at a boundary there: reparameterise, or use method 'nuts' or 'svi'"
    )


def run_laplace(spec: ModelSpec, data: Mapping, config: LaplaceSettings, seed: int = 0,
                progress: bool = False) -> RunOutput:
    if spec.observed and any(k in data and data[k] is None for k in spec.observed):
        raise ZooError(f"laplace on model {spec.name!r} needs observed data")
    U, u0, flat, transforms = potential(spec, data, config.init_strategy)
    mode = find_mode(U, u0, config, spec.name)
    H = hessian(U, mode)
    if not torch.isfinite(H).all():
        raise NotPositiveDefiniteError(
            f"laplace on model {spec.name!r}: the Hessian at the mode has non-finite entries; "
            "use method 'nuts' or 'svi'"
        )
    L = cholesky_or_explain(H, flat, spec.name)
    # u = û + L^{-T} ε has covariance (L Lᵀ)⁻¹ = H⁻¹.
    eps = torch.randn(config.num_samples, mode.numel(), dtype=mode.dtype)
    u = mode + torch.linalg.solve_triangular(L.T, eps.T, upper=True).T
    unconstrained = flat.unflatten(u)
    latents = {
        name: transforms[name].inv(value).unsqueeze(0) if name in transforms else value.unsqueeze(0)
        for name, value in unconstrained.items()
    }
    mode_sites = flat.unflatten(mode)
    info = {
        "map": {n: (transforms[n].inv(v) if n in transforms else v).tolist() for n, v in mode_sites.items()},
        "log_joint_at_mode": -float(U(mode)),  # includes the log-Jacobian (unconstrained density)
        "log_det_hessian": float(2 * torch.log(torch.diagonal(L)).sum()),
        "dim": mode.numel(),
        "gradient_norm_at_mode": float(torch.autograd.functional.jacobian(U, mode).norm()),
        "unconstrained_mode": mode,
        "hessian": H,
        "sites": flat.names,
    }
    out_warnings = []
    if info["gradient_norm_at_mode"] > 1e-3 * max(1.0, math.sqrt(mode.numel())):
        out_warnings.append(
            f"the optimiser did not reach a stationary point (|∇U| = "
            f"{info['gradient_norm_at_mode']:.2g}); raise adam_steps or lbfgs_steps"
        )
    return RunOutput(latents, {}, info, out_warnings)
