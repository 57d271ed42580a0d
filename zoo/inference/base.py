"""What every inference runner returns, and pieces the runners share."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from pyro.infer import autoguide

INIT_STRATEGIES = {
    "uniform": autoguide.init_to_uniform,
    "median": autoguide.init_to_median,
    "mean": autoguide.init_to_mean,
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
