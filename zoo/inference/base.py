"""What every inference runner returns, and pieces the runners share."""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import torch
from pyro.infer import autoguide

from ..tracing import feasible

# median and mean fall back to a feasible point built without sampling, so improper priors
# (which cannot be sampled) still initialise.
INIT_STRATEGIES = {
    "uniform": autoguide.init_to_uniform,
    "median": partial(autoguide.init_to_median, fallback=feasible),
    "mean": partial(autoguide.init_to_mean, fallback=feasible),
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
