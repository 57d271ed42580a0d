"""Evaluating a Pyro model at many posterior draws at once.

Everything after inference needs the model run at S draws: deterministic sites, pointwise
log-likelihood, posterior predictive. A plate-correct model can do all S in one pass under an
extra outermost ``pyro.plate``; we try that first, check its first draw against a plain run, and
fall back to a loop over draws (slow but right) for models that cannot be vectorised.
"""

from __future__ import annotations

from typing import Callable, Mapping

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide.initialization import InitMessenger
from torch.distributions import transform_to
from pyro.poutine.util import prune_subsample_sites

Draws = dict[str, torch.Tensor]  # site -> tensor shaped (S, *site_shape)

_DRAWS_PLATE = "_zoo_draws"
# What a model that is not plate-correct raises under the extra plate.
_NOT_VECTORISABLE = (ValueError, RuntimeError, IndexError, NotImplementedError)


def get_trace(model: Callable, data: Mapping, condition: Mapping | None = None):
    """One trace of ``model(**data)``, optionally conditioned, with subsample sites pruned."""
    fn = poutine.condition(model, dict(condition)) if condition else model
    with torch.no_grad(), poutine.block():
        return prune_subsample_sites(poutine.trace(fn).get_trace(**data))


def structure(model: Callable, data: Mapping):
    """A trace for the model's structure (sites, shapes, supports), not for its values: latent
    sites take a feasible point instead of a prior draw, so improper priors
    (``ImproperUniform``) that cannot be sampled still trace."""
    return get_trace(InitMessenger(feasible)(model), data)


def feasible(site: dict) -> torch.Tensor:
    # Pyro's init_tofeasible samples once for the shape, which ImproperUniform cannot do.
    fn = site["fn"]
    return transform_to(fn.support)(torch.zeros(fn.batch_shape + fn.event_shape))


def is_deterministic(site: dict) -> bool:
    return bool(site.get("infer", {}).get("_deterministic"))


def latent_sites(trace) -> list[str]:
    """Sample sites that inference targets: not observed, not deterministic."""
    return [
        n for n, s in trace.nodes.items() if s["type"] == "sample" and not s["is_observed"]
    ]


def deterministic_sites(trace) -> list[str]:
    return [n for n, s in trace.nodes.items() if s["type"] == "sample" and is_deterministic(s)]


def observed_sites(trace) -> list[str]:
    """Observations: observed sample sites that are neither deterministic nor ``pyro.factor``."""
    return [
        n
        for n, s in trace.nodes.items()
        if s["type"] == "sample"
        and s["is_observed"]
        and not is_deterministic(s)
        and not isinstance(s["fn"], dist.Unit)
    ]


def observed_keys(model: Callable, data: Mapping) -> dict[str, str]:
    """Map each observed site to the data key that holds its value (``obs=y`` -> ``"y"``).

    Sites whose value is not a data entry (e.g. ``obs`` computed inside the model) map to the
    site name itself.
    """
    trace = structure(model, data)
    out = {}
    for name in observed_sites(trace):
        value = trace.nodes[name]["value"]
        key = next((k for k, v in data.items() if v is value), None)
        if key is None:  # the model may have converted the value; match by content
            key = next(
                (
                    k
                    for k, v in data.items()
                    if torch.is_tensor(v) and v.shape == value.shape and torch.equal(v, value)
                ),
                name,
            )
        out[name] = key
    return out


def max_plate_nesting(trace) -> int:
    dims = [
        f.dim
        for s in trace.nodes.values()
        if s["type"] == "sample"
        for f in s["cond_indep_stack"]
        if f.vectorized
    ]
    return -min(dims) if dims else 0


def _num_draws(draws: Draws) -> int:
    sizes = {v.shape[0] for v in draws.values()}
    if len(sizes) != 1:
        raise ValueError(f"draws have different leading sizes {sorted(sizes)}")
    return sizes.pop()


def _vectorized(model, draws: Draws, data, sites, log_prob: bool, ref) -> Draws:
    num = _num_draws(draws)
    nesting = max_plate_nesting(ref)
    cond = {}
    for name, value in draws.items():
        batch_ndim = len(ref.nodes[name]["fn"].batch_shape)
        pad = (1,) * max(nesting - batch_ndim, 0)
        cond[name] = value.reshape((num,) + pad + tuple(value.shape[1:]))

    def vectorized_model(**kw):
        with pyro.plate(_DRAWS_PLATE, num, dim=-nesting - 1):
            return model(**kw)

    trace = get_trace(vectorized_model, data, cond)
    out = {}
    for name in sites:
        site = trace.nodes[name]
        value = site["fn"].log_prob(site["value"]) if log_prob else site["value"]
        want = _site_result(ref.nodes[name], log_prob).shape
        if value.numel() != num * want.numel():
            raise ValueError(f"site {name!r} did not vectorise")
        out[name] = value.reshape((num,) + tuple(want))
    return out


def _site_result(site, log_prob: bool) -> torch.Tensor:
    return site["fn"].log_prob(site["value"]) if log_prob else site["value"]


def _sequential(model, draws: Draws, data, sites, log_prob: bool) -> Draws:
    num = _num_draws(draws)
    rows = []
    for i in range(num):
        trace = get_trace(model, data, {k: v[i] for k, v in draws.items()})
        rows.append({n: _site_result(trace.nodes[n], log_prob) for n in sites})
    return {n: torch.stack([r[n] for r in rows]) for n in sites}


def evaluate(
    model: Callable,
    draws: Draws,
    data: Mapping,
    sites: list[str] | None = None,
    log_prob: bool = False,
    vectorize: bool = True,
) -> Draws:
    """Run ``model(**data)`` conditioned on each of S draws; return ``sites`` per draw.

    With ``log_prob=True`` returns ``site.fn.log_prob(site.value)`` (pointwise log-likelihood
    for observed sites) instead of the values. Unconditioned sites are sampled, which gives
    posterior predictive draws when the observed keys are left out of ``data``.
    """
    first = {k: v[0] for k, v in draws.items()}
    ref = get_trace(model, data, first)
    if sites is None:
        sites = [n for n in observed_sites(ref) + deterministic_sites(ref)]
    if not sites:
        return {}
    if vectorize:
        try:
            out = _vectorized(model, draws, data, sites, log_prob, ref)
        except _NOT_VECTORISABLE:
            out = None
        # Guard against a model that broadcasts wrongly under the extra plate: the first
        # draw must reproduce the plain run (exactly for log-densities and deterministic
        # values; sampled sites can only be compared by shape).
        if out is not None and _agrees(out, ref, sites, log_prob):
            return out
    return _sequential(model, draws, data, sites, log_prob)


def _agrees(out: Draws, ref, sites, log_prob: bool) -> bool:
    for name in sites:
        site = ref.nodes[name]
        want = _site_result(site, log_prob)
        got = out[name][0]
        if got.shape != want.shape:
            return False
        fixed = log_prob or is_deterministic(site) or site["is_observed"]
        if fixed and not torch.allclose(got, want, rtol=1e-6, atol=1e-8, equal_nan=True):
            return False
    return True


def _sample_under_plate(fn: Callable, data: Mapping, num_samples: int, sites: list[str],
                        nesting: int, ref=None):
    """Run ``fn`` once under an outer plate of ``num_samples``; return its trace and ``sites``
    reshaped to (S, *shape of a plain run). Raises ValueError when a site did not vectorise."""

    def vectorized(**kw):
        with pyro.plate(_DRAWS_PLATE, num_samples, dim=-nesting - 1):
            return fn(**kw)

    trace, ref = get_trace(vectorized, data), ref or get_trace(fn, data)
    out = {}
    for n in sites:
        want = ref.nodes[n]["value"].shape
        value = trace.nodes[n]["value"]
        if value.numel() != num_samples * want.numel():
            raise ValueError(f"site {n!r} did not vectorise")
        out[n] = value.reshape((num_samples,) + tuple(want))
    return trace, out


def prior_draws(model: Callable, data: Mapping, num_samples: int, vectorize: bool = True) -> Draws:
    """Draws of every latent, deterministic and observed site from the prior."""
    ref = get_trace(model, data)
    sites = latent_sites(ref) + deterministic_sites(ref) + observed_sites(ref)
    if vectorize:
        try:
            return _sample_under_plate(model, data, num_samples, sites, max_plate_nesting(ref),
                                       ref)[1]
        except _NOT_VECTORISABLE:
            pass
    traces = [get_trace(model, data) for _ in range(num_samples)]
    return {n: torch.stack([t.nodes[n]["value"] for t in traces]) for n in sites}


def guide_draws(guide: Callable, data: Mapping, num_samples: int, sites: list[str],
                max_plate_nesting: int) -> tuple[Draws, torch.Tensor]:
    """``num_samples`` iid draws of ``sites`` from a guide and log q at each (S,).

    log q sums every sample site of the guide: autoguides sample an auxiliary unconstrained
    site and put the log-Jacobian in a Delta at the constrained value, so the sum is the density
    of the constrained draw. One pass under an outer plate, else a loop."""
    try:
        trace, out = _sample_under_plate(guide, data, num_samples, sites, max_plate_nesting)
        log_q = sum(_per_draw(s["fn"].log_prob(s["value"]), num_samples)
                    for s in trace.nodes.values() if s["type"] == "sample")
        return out, log_q
    except _NOT_VECTORISABLE:
        traces = [get_trace(guide, data) for _ in range(num_samples)]
        out = {n: torch.stack([t.nodes[n]["value"] for t in traces]) for n in sites}
        log_q = torch.stack([sum(s["fn"].log_prob(s["value"]).sum() for s in t.nodes.values()
                                 if s["type"] == "sample") for t in traces])
        return out, log_q


def _per_draw(log_prob: torch.Tensor, num_samples: int) -> torch.Tensor:
    """Sum a site's log-density over everything but the draws dimension."""
    if log_prob.dim() == 0 or log_prob.numel() == 1:  # a site outside the draws plate
        return log_prob.reshape(()).expand(num_samples)
    return log_prob.reshape(num_samples, -1).sum(-1)
