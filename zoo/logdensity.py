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
from .gradient import Cost, ValueAndGrad, agree, autograd, measure, quietly, record
from .registry import ModelSpec

BatchedDensity = Callable[[torch.Tensor], torch.Tensor]  # (C, d) -> (C,)


def generator(seed: int) -> torch.Generator:
    """A seeded generator on torch's default device: draws on a GPU need a GPU generator."""
    return torch.Generator(device=torch.get_default_device()).manual_seed(seed)


class NotVectorisable(ZooError):
    """The model's log density cannot be evaluated for many points in one pass."""


def _bounds(support) -> list[torch.Tensor]:
    """The tensors a support is built from (interval bounds), unwrapping independent()."""
    support = getattr(support, "base_constraint", support)
    return [torch.as_tensor(getattr(support, k)) for k in ("lower_bound", "upper_bound")
            if hasattr(support, k)]


def check_fixed_supports(spec: ModelSpec, data: Mapping, ref=None) -> None:
    """Refuse a model whose supports move with its parameters (``Uniform(a, 10)`` for b): the
    samplers keep each site's first transform, which would silently give the wrong density."""
    ref = tracing.structure(spec.fn, data) if ref is None else ref
    latents = tracing.latent_sites(ref)
    transforms = {n: biject_to(ref.nodes[n]["fn"].support) for n in latents}
    moved = {n: transforms[n](transforms[n].inv(ref.nodes[n]["value"]) + 0.5) for n in latents}
    try:
        other = tracing.get_trace(spec.fn, data, moved)
    except Exception:  # noqa: BLE001 - the model cannot run there; nothing to compare
        return
    for n in latents:
        a, b = _bounds(ref.nodes[n]["fn"].support), _bounds(other.nodes[n]["fn"].support)
        if any(x.shape != y.shape or not torch.equal(x, y) for x, y in zip(a, b)):
            raise ZooError(
                f"site {n!r} of model {spec.name!r}: its support's bounds depend on other "
                "parameters, which the samplers' fixed transforms cannot follow; write it as "
                f"zoo.models.bounded({n!r}, lower=..., upper=...) (Stan's real<lower=a> b)")


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
        check_fixed_supports(spec, self.data, ref)
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
        draws, log_det = self.constrain(u)
        return self.constrained(draws) + log_det

    def constrain(self, u: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Points u (..., d) -> (site -> T(u) constrained, log|det J_T(u)| (...))."""
        draws, log_det = {}, torch.zeros(u.shape[:-1], dtype=u.dtype)
        for name, v in self.flat.unflatten(u).items():
            t = self.transforms[name]
            draws[name] = x = t(v)
            log_det = log_det + t.log_abs_det_jacobian(v, x).reshape(u.shape[:-1] + (-1,)).sum(-1)
        return draws, log_det

    def point(self, u: torch.Tensor) -> torch.Tensor:
        """log p(y, T(u)) + log|det J_T(u)| at one point u (d,): a plain run of the model, which
        ``torch.func.vmap`` turns into a run for many points whatever the model's shapes."""
        draws, out = self.constrain(u)
        # validation checks values in Python (NaN warnings, support checks), which vmap cannot
        # do on a batch; the density was checked against plain, validated runs already
        with pyro.validation_enabled(False):
            trace = prune_subsample_sites(
                poutine.trace(poutine.condition(self.spec.fn, draws)).get_trace(**self.data))
            return out + trace.log_prob_sum(lambda name, site: not tracing.is_deterministic(site))

    def _plate(self, num_points: int) -> BatchedDensity:
        """The batched density as one run of the model under an outer plate (plate-correct
        models; the only way for models with enumerated discrete sites)."""
        def log_density(u: torch.Tensor) -> torch.Tensor:
            draws, out = self.constrain(u)
            with pyro.validation_enabled(False):  # checked against validated plain runs
                return out + self._under_plate(draws, num_points)

        return log_density

    def batched(self, num_points: int, seed: int = 0) -> tuple[BatchedDensity, str]:
        """``u (num_points, d) -> log p(y, T(u)) + log|det J|``: the model vectorised over
        points, checked against plain runs at random points. Raises ``NotVectorisable``."""
        f, how, _ = self._vectorised(num_points, self._probes(num_points, seed))
        return f, how

    def value_and_grad(self, num_points: int, jit: bool = True, seed: int = 0
                       ) -> tuple[ValueAndGrad, str, Cost]:
        """``u (num_points, d) -> (log density (num_points,), its gradient (num_points, d))``
        for samplers, which call it thousands of times.

        The model is vectorised over points by ``vmap`` (any model written for one draw), or by
        an outer plate (plate-correct models, enumerated ones); a vectorised density that fails or
        disagrees with plain runs at random points is not used. With ``jit`` value and gradient
        are recorded into one program (``zoo.gradient.record``), checked again at fresh points.
        Returns (function, how it runs, its ``Cost``). Raises ``NotVectorisable``
        when the model cannot be vectorised (e.g. Python control flow on a latent).
        """
        probes = self._probes(num_points, seed)
        f, how, _ = self._vectorised(num_points, probes)
        eager = autograd(f)
        if not jit:
            return eager, f"{how}, autograd (jit = false)", quietly(measure, eager, probes[0])
        try:
            recorded, cost = quietly(record, f, probes[0])
            if all(quietly(agree, recorded, eager, u) for u in probes[1:]):
                return recorded, f"{how}, recorded", cost
            why = "the recording disagreed with the model"
        except Exception as e:  # recording is best effort: anything it trips on means less
            why = f"recording failed: {type(e).__name__}"
        # e.g. a custom autograd.Function without functorch support (Pyro's enumeration):
        # torch.jit.trace of the density alone, differentiated by autograd
        try:
            traced = autograd(quietly(lambda u: torch.jit.trace(f, (u,), check_trace=False),
                                      probes[0]))
            if all(quietly(agree, traced, eager, u) for u in probes[1:]):
                return traced, f"{how}, torch.jit.trace + autograd ({why})", \
                    quietly(measure, traced, probes[0])
        except Exception:  # noqa: BLE001 - eager it is
            pass
        return eager, f"{how}, autograd ({why})", quietly(measure, eager, probes[0])

    def _probes(self, num_points: int, seed: int) -> list[torch.Tensor]:
        gen = generator(seed)
        return [torch.rand(num_points, self.dim, generator=gen) * 4 - 2 for _ in range(3)]

    def _vectorised(self, num_points: int, probes: list[torch.Tensor]):
        """The first of vmap and the outer plate that runs and matches ``unconstrained`` (plain
        runs) at two rows of a probe: (function, "vmap" or "plate", reasons others failed)."""
        candidates = []
        if not self.enumerated:
            candidates.append(("vmap", torch.func.vmap(self.point)))
        if self.spec.vectorizable:
            candidates.append(("plate", self._plate(num_points)))
        rows = [0, num_points - 1]  # the reference loops over points when it must: check two
        want = self.unconstrained(probes[0][rows])
        reasons, slow_vmap = [], None
        for how, f in candidates:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    got = quietly(f, probes[0])
            except Exception as e:  # the model cannot run this way; say why if none can
                reasons.append(f"{how}: {type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}")
                continue
            if got.shape != (num_points,) or not torch.allclose(got[rows], want, **_tol(u=want)):
                reasons.append(f"{how}: its log density differs from plain runs")
                continue
            slow = [w for w in caught if "performance drop" in str(w.message)]
            if slow and how == "vmap" and len(candidates) > 1:
                # vmap lacks a batching rule and loops over points: the plate may do better
                reasons.append(f"vmap: {str(slow[0].message).splitlines()[0][:160]}")
                slow_vmap = f
                continue
            return f, how, reasons
        if slow_vmap is not None:
            return slow_vmap, "vmap", reasons
        raise NotVectorisable("; ".join(reasons) or "no way to vectorise it")


def _tol(u: torch.Tensor) -> dict:
    return {"rtol": 1e-6, "atol": 1e-6} if u.dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-3}
