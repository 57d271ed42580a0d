"""What every inference runner returns, and pieces the runners share."""

from __future__ import annotations

import os
import warnings
from functools import partial
from typing import Any, NamedTuple

import pyro
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
