"""The log joint density of a Pyro model at many points at once.

Evidence estimators need log p(y, θ) at thousands of draws. Pyro gives it one point at a time
(``potential_fn``); here the model runs once under an outer plate over S points, so

    log p̃(u) = log p(y, T(u)) + log |det ∂T/∂u|          (unconstrained u, T = biject_to(support))

costs about one model evaluation for all S. The result is checked against Pyro's own
potential at a point on construction, so a model that does not vectorise falls back to a loop.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import biject_to

from . import tracing
from .errors import ZooError
from .registry import ModelSpec

BatchedDensity = Callable[[torch.Tensor], torch.Tensor]  # (C, d) -> (C,)


def generator(seed: int) -> torch.Generator:
    """A seeded generator on torch's default device: draws on a GPU need a GPU generator."""
    return torch.Generator(device=torch.get_default_device()).manual_seed(seed)


class NotVectorisable(ZooError):
    """The model's log density cannot be evaluated for many points in one pass."""


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

    def batched(self, num_points: int, jit: bool = True, seed: int = 0) -> tuple[BatchedDensity, str]:
        """A lean ``u (num_points, d) -> log p(y, T(u)) + log|det J|`` for samplers.

        ``unconstrained`` re-checks the model on every call; a sampler calls this thousands
        of times, so here the model runs once under the outer plate with nothing else, and is
        checked once, against ``unconstrained`` (itself checked against plain runs) at random
        points. With ``jit`` the function is traced by ``torch.jit.trace`` and checked again
        (value and gradient); a trace that fails or disagrees falls back to the eager function.
        Returns (function, note on how it runs). Raises ``NotVectorisable`` when even the
        eager batched function fails or disagrees (e.g. Python control flow on a latent).
        """
        shapes = {n: s for n, s in zip(self.flat.names, self.flat.shapes)}
        nesting, model, data = self.max_plate_nesting, self.spec.fn, self.data

        def vectorized(**kw):
            with pyro.plate(tracing._DRAWS_PLATE, num_points, dim=-nesting - 1):
                return model(**kw)

        def log_density(u: torch.Tensor) -> torch.Tensor:
            cond, out = {}, 0.0
            for name, v in self.flat.unflatten(u).items():
                t = self.transforms[name]
                x = t(v)
                out = out + t.log_abs_det_jacobian(v, x).reshape(num_points, -1).sum(-1)
                pad = (1,) * max(nesting - len(shapes[name]), 0)
                cond[name] = x.reshape((num_points,) + pad + tuple(shapes[name]))
            trace = prune_subsample_sites(poutine.trace(poutine.condition(vectorized, cond))
                                          .get_trace(**data))
            trace.compute_log_prob(lambda name, site: not tracing.is_deterministic(site))
            for site in trace.nodes.values():
                if site["type"] == "sample" and "log_prob" in site:
                    out = out + site["log_prob"].reshape(num_points, -1).sum(-1)
            return out

        gen = generator(seed)
        probe = [torch.rand(num_points, self.dim, generator=gen) * 4 - 2 for _ in range(2)]
        try:
            with pyro.validation_enabled(False), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = log_density(probe[0])
        except tracing._NOT_VECTORISABLE as e:
            raise NotVectorisable(f"{type(e).__name__}: {str(e).splitlines()[0][:120]}") from e
        rows = [0, num_points - 1]  # the reference loops over points when it must: check two
        want = self.unconstrained(probe[0][rows])
        if got.shape != (num_points,) or not torch.allclose(got[rows], want, **_tol(u=want)):
            raise NotVectorisable("its log density under an outer plate differs from plain runs "
                                  "(the model is not plate-correct)")
        if not jit:
            return log_density, "eager (jit = false)"
        try:
            with pyro.validation_enabled(False), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(log_density, (probe[0],), check_trace=False)
                agree = all(_same_value_and_grad(traced, log_density, u) for u in probe)
        except Exception as e:  # tracing is best effort: anything it trips on means eager
            return log_density, f"eager (torch.jit.trace failed: {type(e).__name__})"
        if not agree:
            return log_density, "eager (the traced function disagreed with the eager one)"
        return traced, "torch.jit.trace"


def _tol(u: torch.Tensor) -> dict:
    return {"rtol": 1e-6, "atol": 1e-6} if u.dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-3}


def _same_value_and_grad(f: BatchedDensity, g: BatchedDensity, u: torch.Tensor) -> bool:
    out = []
    for fn in (f, g):
        x = u.clone().requires_grad_(True)
        value = fn(x)
        (grad,) = torch.autograd.grad(value.sum(), x)
        out.append((value.detach(), grad))
    (v1, g1), (v2, g2) = out
    return torch.allclose(v1, v2, **_tol(v2)) and torch.allclose(g1, g2, **_tol(v2))
