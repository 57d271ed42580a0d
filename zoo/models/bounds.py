"""Parameters whose bounds are other parameters, as Stan declares them (``real<lower=a> b``).

Pyro's samplers (and the zoo's) map each latent site to the real line once, by the transform of
its support in a first trace: a support that moves with another parameter (``Uniform(a, 10)``
for b) would keep the first trace's bound and silently sample the wrong density, so the zoo
refuses such a model (``zoo.logdensity.LogJoint``). ``bounded`` is the way to write it: the
parameter is sampled on the real line as ``{name}_unconstrained`` and mapped to its bounds at
their current values, with the log-Jacobian added, as Stan's own transforms do:

    b = T_(lower, upper)(u),  log p += log |dT/du|
    T = lower + exp(u) | upper - exp(u) | lower + (upper - lower) sigmoid(u)

The constrained value is a ``pyro.deterministic`` site named ``name``; its prior is the caller's
``pyro.factor`` (Stan's ``~`` on a bounded parameter drops the truncation constant too).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import Tensor
from torch.distributions import biject_to, constraints

from ..errors import ZooError


def bounded(name: str, lower: Tensor | float | None = None, upper: Tensor | float | None = None,
            shape: tuple[int, ...] = ()) -> Tensor:
    """A parameter on (lower, upper), either bound may be another parameter's value; ``shape``
    is its event shape (the whole shape when sampled outside plates)."""
    if lower is None and upper is None:
        raise ZooError(f"bounded({name!r}): give lower, upper or both")
    if lower is not None and upper is not None:
        support = constraints.interval(lower, upper)
    elif lower is not None:
        support = constraints.greater_than(lower)
    else:
        support = constraints.less_than(upper)
    u = pyro.sample(f"{name}_unconstrained",
                    dist.ImproperUniform(constraints.real, (), tuple(shape)))
    transform = biject_to(support)
    value = transform(u)
    log_det = transform.log_abs_det_jacobian(u, value)
    pyro.factor(f"{name}_log_jacobian", log_det.sum(tuple(range(-len(shape), 0))) if shape
                else log_det)
    return pyro.deterministic(name, value, event_dim=len(shape))
