"""The log joint density of a Pyro model at many points at once.

Evidence estimators need log p(y, θ) at thousands of draws. Pyro gives it one point at a time
(``potential_fn``); here the model runs once under an outer plate over S points, so

    log p̃(u) = log p(y, T(u)) + log |det ∂T/∂u|          (unconstrained u, T = biject_to(support))

costs about one model evaluation for all S. The result is checked against Pyro's own
potential at a point on construction, so a model that does not vectorise falls back to a loop.
Discrete sites marked for enumeration are summed out (``tracing.log_joint``): θ is then the
continuous latents only, and p(y, θ) = sum_z p(y, z, θ).
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
    the latent sites in the order the model samples them. Enumerated sites are not latents
    here: they are summed out of the density.
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
        self.enumerated = bool(tracing.enumerated_sites(ref))
        # constrained value shape, and how many of its dims are batch (plate) dims
        self._shapes = {n: tuple(ref.nodes[n]["value"].shape) for n in self.latents}
        self._batch_ndim = {n: len(ref.nodes[n]["fn"].batch_shape) for n in self.latents}

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
        if self.enumerated:
            return self._summed_out(draws)
        lp = tracing.evaluate(self.spec.fn, dict(draws), self.data, sites=self._sites,
                              log_prob=True, vectorize=self.spec.vectorizable)
        return sum(v.reshape(v.shape[0], -1).sum(-1) for v in lp.values())

    def _summed_out(self, draws: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """log sum_z p(y, z, θ) at draws of θ: one pass under the draws plate when its first
        and last rows match plain per-draw contractions, else one contraction per draw."""
        nesting, fn = self.max_plate_nesting, self.spec.fn
        num = next(iter(draws.values())).shape[0]

        def one(i: int) -> torch.Tensor:
            trace = tracing.get_trace(poutine.enum(fn, first_available_dim=-nesting - 1),
                                      self.data, {n: v[i] for n, v in draws.items()})
            return tracing.log_joint(trace)

        if self.spec.vectorizable:
            try:
                with torch.no_grad():
                    out = self._under_plate(dict(draws), num)
            except tracing._NOT_VECTORISABLE:
                out = None
            rows = [0, num - 1]
            if out is not None and out.shape == (num,) and torch.allclose(
                    out[rows], torch.stack([one(i) for i in rows]), **_tol(out)):
                return out
        return torch.stack([one(i) for i in range(num)])

    def _under_plate(self, draws: Mapping[str, torch.Tensor], num_points: int) -> torch.Tensor:
        """log p(y, x) at constrained draws ``site -> (num_points, *shape)`` in one run of the
        model under an outer plate, enumerated sites summed out; returns (num_points,)."""
        nesting, model = self.max_plate_nesting, self.spec.fn

        def vectorized(**kw):
            with pyro.plate(tracing._DRAWS_PLATE, num_points, dim=-nesting - 1):
                return model(**kw)

        cond = {}
        for name in self.latents:
            x = draws[name]
            pad = (1,) * max(nesting - self._batch_ndim[name], 0)
            cond[name] = x.reshape((num_points,) + pad + self._shapes[name])
        if self.enumerated:  # enumeration dims go left of the draws plate
            vectorized = poutine.enum(vectorized, first_available_dim=-nesting - 2)
        trace = prune_subsample_sites(poutine.trace(poutine.condition(vectorized, cond))
                                      .get_trace(**self.data))
        if self.enumerated:
            return tracing.log_joint(trace, tracing._DRAWS_PLATE)
        trace.compute_log_prob(lambda name, site: not tracing.is_deterministic(site))
        out = 0.0
        for site in trace.nodes.values():
            if site["type"] == "sample" and "log_prob" in site:
                out = out + site["log_prob"].reshape(num_points, -1).sum(-1)
        return out

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
        def log_density(u: torch.Tensor) -> torch.Tensor:
            draws, out = {}, 0.0
            for name, v in self.flat.unflatten(u).items():
                t = self.transforms[name]
                draws[name] = x = t(v)
                out = out + t.log_abs_det_jacobian(v, x).reshape(num_points, -1).sum(-1)
            return out + self._under_plate(draws, num_points)

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
