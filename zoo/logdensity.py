"""The log joint density of a Pyro model at many points at once.

Evidence estimators need log p(y, θ) at thousands of draws. Pyro gives it one point at a time
(``potential_fn``); here the model runs once under an outer plate over S points, so

    log p̃(u) = log p(y, T(u)) + log |det ∂T/∂u|          (unconstrained u, T = biject_to(support))

costs about one model evaluation for all S. The result is checked against Pyro's own
potential at a point on construction, so a model that does not vectorise falls back to a loop.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch.distributions import biject_to

from . import tracing
from .registry import ModelSpec


class LogJoint:
    """log p(y, θ) for ``spec.fn(**data)`` over the latent sites, batched over points.

    ``flat`` (zoo.inference.laplace.Flat) fixes the order of the unconstrained coordinates:
    the latent sites in the order the model samples them.
    """

    def __init__(self, spec: ModelSpec, data: Mapping):
        from .inference.laplace import Flat

        self.spec, self.data = spec, dict(data)
        ref = tracing.structure(spec.fn, self.data)
        self.latents = tracing.latent_sites(ref)
        self.transforms = {n: biject_to(ref.nodes[n]["fn"].support) for n in self.latents}
        self.flat = Flat({n: self.transforms[n].inv(ref.nodes[n]["value"]) for n in self.latents})
        self._sites = [n for n, s in ref.nodes.items()
                       if s["type"] == "sample" and not tracing.is_deterministic(s)]
        self.max_plate_nesting = tracing.max_plate_nesting(ref)

    @property
    def dim(self) -> int:
        return sum(self.flat.sizes)

    def to_unconstrained(self, draws: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Constrained draws ``site -> (S, *shape)`` to flat unconstrained points (S, d)."""
        return torch.cat(
            [self.transforms[n].inv(draws[n]).reshape(draws[n].shape[0], -1) for n in self.latents],
            dim=-1,
        )

    def to_constrained(self, u: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: self.transforms[n](v) for n, v in self.flat.unflatten(u).items()}

    def constrained(self, draws: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log p(y, θ) at constrained draws ``site -> (S, *shape)``; returns (S,)."""
        lp = tracing.evaluate(self.spec.fn, dict(draws), self.data, sites=self._sites,
                              log_prob=True, vectorize=self.spec.vectorizable)
        return sum(v.reshape(v.shape[0], -1).sum(-1) for v in lp.values())

    def unconstrained(self, u: torch.Tensor) -> torch.Tensor:
        """log p(y, T(u)) + log|det J_T(u)| at points u of shape (S, d); returns (S,)."""
        parts = self.flat.unflatten(u)
        draws, log_det = {}, torch.zeros(u.shape[0], dtype=u.dtype)
        for n, v in parts.items():
            x = self.transforms[n](v)
            draws[n] = x
            ladj = self.transforms[n].log_abs_det_jacobian(v, x)
            log_det = log_det + ladj.reshape(u.shape[0], -1).sum(-1)
        return self.constrained(draws) + log_det
