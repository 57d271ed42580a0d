"""Evaluating a Pyro model at many posterior draws at once.

Everything after inference needs the model run at S draws: deterministic sites, pointwise
log-likelihood, posterior predictive. A plate-correct model can do all S in one pass under an
extra outermost ``pyro.plate``; we try that first, then ``torch.func.vmap`` over plain runs
(right for any model written for one draw: ``a[g]``, ``X @ beta``), check the first draw against
a plain run, and fall back to a loop over draws (slow but right) where neither works.

Discrete sites marked ``infer={"enumerate": "parallel"}`` (``enumerated_sites``) are summed out,
never targeted by inference: ``latent_sites`` leaves them out, pointwise log-densities
(``evaluate(log_prob=True)``) are marginal over them, and ``log_joint`` contracts them out of
log p(y, θ) with Pyro's tensor variable elimination. Sampling (predictive, prior) draws them.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Mapping

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing
from torch.distributions import transform_to
from pyro.poutine.util import prune_subsample_sites

from .errors import ZooError

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
    if fn.has_enumerate_support:  # discrete: no transform to its support; take its first value
        return fn.enumerate_support(expand=False)[0].expand(fn.batch_shape + fn.event_shape)
    # zeros in unconstrained space, whose shape may differ (simplex: K - 1; LKJ Cholesky: the
    # strict lower triangle)
    t = transform_to(fn.support)
    return t(torch.zeros(t.inverse_shape(fn.batch_shape + fn.event_shape)))


def is_deterministic(site: dict) -> bool:
    return bool(site.get("infer", {}).get("_deterministic"))


def is_enumerated(site: dict) -> bool:
    """A latent discrete site that inference sums out by parallel enumeration."""
    return (site["type"] == "sample" and not site["is_observed"]
            and site.get("infer", {}).get("enumerate") == "parallel")


def enumerated_sites(trace) -> list[str]:
    return [n for n, s in trace.nodes.items() if is_enumerated(s)]


def latent_sites(trace) -> list[str]:
    """Sample sites that inference targets: not observed, not deterministic, not enumerated."""
    return [
        n for n, s in trace.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not is_enumerated(s)
    ]


def improper_sites(trace) -> list[str]:
    """Latent sites with an improper prior (``ImproperUniform``, Stan's flat default): the
    model has no prior predictive, evidence or SBC, but MCMC, Laplace and SVI still fit it."""
    import pyro.distributions as dist

    return [n for n in latent_sites(trace) if isinstance(trace.nodes[n]["fn"], dist.ImproperUniform)]


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


def factor_sites(trace) -> list[str]:
    """``pyro.factor`` terms (a ``target +=`` likelihood, as Stan ports write it)."""
    return [n for n, s in trace.nodes.items()
            if s["type"] == "sample" and s["is_observed"] and isinstance(s["fn"], dist.Unit)]


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


def _vectorized(model, draws: Draws, data, sites, log_prob: bool, ref, want: Draws,
                enum_from: int | None) -> Draws:
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

    # The draws plate takes the dim left of the model's plates; enumeration goes left of it.
    enum_dim = None if enum_from is None else enum_from - 1
    trace = get_trace(_enumerate(vectorized_model, enum_dim), data, cond)
    out = {}
    for name, value in _results(trace, sites, log_prob, enum_dim).items():
        if value.numel() != num * want[name].numel():
            raise ValueError(f"site {name!r} did not vectorise")
        out[name] = value.reshape((num,) + tuple(want[name].shape))
    return out


def _site_result(site, log_prob: bool) -> torch.Tensor:
    return site["fn"].log_prob(site["value"]) if log_prob else site["value"]


def _enumerate(model: Callable, first_dim: int | None) -> Callable:
    """``model`` with its enumerated sites enumerated in parallel from dim ``first_dim`` leftwards."""
    return model if first_dim is None else poutine.enum(model, first_available_dim=first_dim)


def _results(trace, sites, log_prob: bool, enum_dim: int | None) -> Draws:
    if enum_dim is None:
        return {n: _site_result(trace.nodes[n], log_prob) for n in sites}
    return {n: marginal_log_prob(trace, n, enum_dim) for n in sites}


def marginal_log_prob(trace, name: str, enum_dim: int) -> torch.Tensor:
    """Pointwise log p(site | continuous values) with the enumerated sites it depends on summed.

    In a trace enumerated from dim ``enum_dim`` leftwards, the site's log-density has a dim for
    each enumerated site z it depends on. Adding log p(z) for those z (and for the enumerated
    sites they in turn depend on) and taking logsumexp over the enumeration dims gives, per
    element of the site's plates, log sum_z p(z) p(y | z): for a mixture,
    log sum_k weights[k] Normal(y[n] | locs[k], scales[k]).
    """
    plate_ndim = -enum_dim - 1

    def enum_dims(t: torch.Tensor) -> set[int]:
        return {d for d in range(-t.dim(), -plate_ndim) if t.shape[d] > 1}

    site = trace.nodes[name]
    terms = [site["fn"].log_prob(site["value"])]
    need = enum_dims(terms[0])
    pending = [s for n, s in trace.nodes.items() if is_enumerated(s) and n != name]
    grew = True
    while grew:  # the enumerated ancestors, through the enumeration dims they share
        grew = False
        for s in list(pending):
            if s["infer"].get("_enumerate_dim") in need:
                terms.append(s["fn"].log_prob(s["value"]))
                need |= enum_dims(terms[-1])
                pending.remove(s)
                grew = True
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    if total.dim() > plate_ndim:
        total = total.logsumexp(dim=tuple(range(total.dim() - plate_ndim)))
    plain = terms[0].shape[max(terms[0].dim() - plate_ndim, 0):]
    if total.shape != plain:
        raise ZooError(f"site {name!r} depends on an enumerated site in a plate it is not in: its "
                       "pointwise log-density with that site summed out is not defined")
    return total


def log_joint(trace, target_plate: str | None = None) -> torch.Tensor:
    """log p(y, θ) of an enumerated trace, its enumerated sites summed out by Pyro's tensor
    variable elimination (``contract_to_tensor``, as in Pyro's NUTS potential): a scalar, or
    one value per element of ``target_plate`` (e.g. the draws plate) when given."""
    trace.compute_log_prob(lambda name, site: not is_deterministic(site))
    trace.pack_tensors()
    factors: OrderedDict = OrderedDict()
    for site in trace.nodes.values():
        if site["type"] == "sample" and "log_prob" in site:
            ordinal = frozenset(trace.plate_to_symbol[f.name]
                                for f in site["cond_indep_stack"] if f.vectorized)
            factors.setdefault(ordinal, []).append(site["packed"]["log_prob"])
    enum_dims = set(trace.symbol_to_dim) - set(trace.plate_to_symbol.values())
    if target_plate is None:
        return contract_to_tensor(factors, enum_dims)
    symbol = trace.plate_to_symbol[target_plate]
    size = next(f.size for s in trace.nodes.values() if s["type"] == "sample"
                for f in s["cond_indep_stack"] if f.name == target_plate)
    # the ring is told the plate's size: packing drops a plate of size 1 from every factor
    ring = LogRing(dim_to_size={symbol: size})
    return contract_to_tensor(factors, enum_dims, target_ordinal=frozenset([symbol]), ring=ring)


def _sequential(model, draws: Draws, data, sites, log_prob: bool,
                enum_from: int | None = None) -> Draws:
    num = _num_draws(draws)
    rows = []
    for i in range(num):
        trace = get_trace(_enumerate(model, enum_from), data, {k: v[i] for k, v in draws.items()})
        rows.append(_results(trace, sites, log_prob, enum_from))
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
    # Log-densities are marginal over enumerated sites: enumerate them left of the plates.
    enum_from = -max_plate_nesting(ref) - 1 if log_prob and enumerated_sites(ref) else None
    want = _results(ref if enum_from is None else get_trace(_enumerate(model, enum_from), data, first),
                    sites, log_prob, enum_from)
    if vectorize:
        try:
            out = _vectorized(model, draws, data, sites, log_prob, ref, want, enum_from)
        except _NOT_VECTORISABLE:
            out = None
        # Guard against a model that broadcasts wrongly under the extra plate: the first
        # draw must reproduce the plain run (exactly for log-densities and deterministic
        # values; sampled sites can only be compared by shape).
        if out is not None and _agrees(out, ref, want, sites, log_prob):
            return out
    if enum_from is None:  # a model written for one draw: vmap runs it for all (not enumerated)
        try:
            out = _vmapped(model, draws, data, sites, log_prob)
        except Exception:  # noqa: BLE001 - vmap cannot run this model; the loop can
            out = None
        if out is not None and _agrees(out, ref, want, sites, log_prob):
            return out
    return _sequential(model, draws, data, sites, log_prob, enum_from)


def _vmapped(model, draws: Draws, data, sites, log_prob: bool) -> Draws:
    """``sites`` at every draw by ``torch.func.vmap`` over a plain run: right for any model
    written for one draw, whatever its shapes (``a[g]``, ``X @ beta``). Sites not in ``draws``
    are sampled independently per draw (``randomness="different"``)."""
    def one(values: Draws) -> Draws:
        trace = prune_subsample_sites(poutine.trace(poutine.condition(model, values)).get_trace(**data))
        return {n: _site_result(trace.nodes[n], log_prob) for n in sites}

    with torch.no_grad(), poutine.block(), pyro.validation_enabled(False):
        return torch.func.vmap(one, randomness="different")(dict(draws))


def _agrees(out: Draws, ref, want: Draws, sites, log_prob: bool) -> bool:
    for name in sites:
        site = ref.nodes[name]
        got = out[name][0]
        if got.shape != want[name].shape:
            return False
        fixed = log_prob or is_deterministic(site) or site["is_observed"]
        if fixed and not torch.allclose(got, want[name], rtol=1e-6, atol=1e-8, equal_nan=True):
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
