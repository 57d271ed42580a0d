"""What every inference runner returns, and pieces the runners share."""

from __future__ import annotations

import os
import warnings
from functools import partial
from typing import Any, Callable, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import transform_to
from pyro.infer import autoguide

from ..tracing import feasible


def init_to_uniform(site: dict | None = None, radius: float = 2.0):
    """Stan's default start: uniform on (-radius, radius) in unconstrained space.

    Pyro's ``init_to_uniform`` draws from the prior once for the shape; an improper prior
    (``ImproperUniform``) cannot be drawn from, so its shape comes from a feasible point. Proper
    priors draw as Pyro does, so their starts (and a seed's results) are unchanged."""
    if site is None:
        return partial(init_to_uniform, radius=radius)
    fn = site["fn"]
    value = feasible(site) if isinstance(fn, dist.ImproperUniform) else fn.sample().detach()
    if fn.has_enumerate_support:
        return value
    t = transform_to(fn.support)
    value = t(torch.rand_like(t.inv(value)) * (2 * radius) - radius)
    value._pyro_custom_init = False  # as Pyro's: reparametrisers may re-initialise it
    return value


def flat_at_feasible(init: Callable, site: dict):
    """``init(site)`` for a proper prior; a feasible point for an improper one (Pyro's median
    and mean would sample it, and send a site with an event shape straight to a sampling
    fallback). Bind ``init`` with functools.partial: a fit's guide keeps it, and is pickled."""
    return feasible(site) if isinstance(site["fn"], dist.ImproperUniform) else init(site)


INIT_STRATEGIES = {
    "uniform": init_to_uniform,
    "median": partial(flat_at_feasible, partial(autoguide.init_to_median, fallback=feasible)),
    "mean": partial(flat_at_feasible, partial(autoguide.init_to_mean, fallback=feasible)),
    "sample": autoguide.init_to_sample,
    "feasible": autoguide.init_to_feasible,
}


class RunOutput(NamedTuple):
    """A runner's raw result; ``zoo.fit`` turns it into a ``Fit``."""

    latents: dict[str, torch.Tensor]  # site -> (chain, draw, *shape), constrained scale
    sample_stats: dict[str, Any]  # name -> array (chain, draw)
    info: dict[str, Any]
    warnings: list[str]
    guide: Any = None


# Tracer warnings raised inside torch and Pyro come from their shape checks and from constants
# built out of Python numbers, on every model (Pyro's JIT paths are tested with them); the same
# warning raised in the model's own code means a tensor became a Python value there.
_LIBRARIES = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, pyro))
CONSTANTS = "results are registered as constants"


def freezes_a_value(w: warnings.WarningMessage) -> bool:
    """A tracer warning from the model's (or guide's) own code: a tensor turned into a Python
    number or bool, whose value the trace would keep for every later call."""
    return (issubclass(w.category, torch.jit.TracerWarning) and CONSTANTS not in str(w.message)
            and not w.filename.startswith(_LIBRARIES))
