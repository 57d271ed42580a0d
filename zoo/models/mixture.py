"""Mixture models: a K-component Gaussian mixture with its assignments enumerated, and
posteriordb's ``low_dim_gauss_mix`` with its assignments summed in the likelihood.

A mixture's likelihood is the same under any relabelling of its components, so with
exchangeable priors the posterior has K! copies of every mode and chains, or an optimiser, land
in any of them: posterior means average the labels and R-hat fails. Both models order the
component locations (``OrderedNormal``): the prior is the iid Normal prior folded onto
loc[0] < loc[1] < ..., which keeps one copy of each mode and loses nothing. This identifies the
components as long as their locations differ; two components at nearly one location stay
interchangeable, and then it is their weights and scales that are poorly determined.

The two ways to handle the assignments z[n]:

- ``gaussian_mixture`` samples them explicitly, ``infer={"enumerate": "parallel"}``, as in
  Pyro's GMM tutorial; the zoo's methods sum them out by enumeration (Pyro's ``TraceEnum_ELBO``
  and NUTS potential, and ``zoo.tracing.log_density``), so only the continuous parameters are
  inferred. The log-likelihood of y[n] is then log sum_k weights[k] Normal(y[n] | locs[k],
  scales[k]), and posterior predictive draws sample z[n] afresh.
- ``low_dim_gauss_mix`` writes the marginal directly with ``MixtureSameFamily``: exactly Stan's
  ``log_mix``, so the model is posteriordb's term for term, and it has no discrete site at all.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.ops.indexing import Vindex
from torch import Tensor
from torch.distributions.utils import _standard_normal, broadcast_all

from ..errors import ZooError
from ..registry import register_model

GMM_REFERENCES = (
    "Pyro tutorial: Gaussian Mixture Model (pyro.ai/examples/gmm.html)",
    "Bishop (2006), Pattern Recognition and Machine Learning, chapter 9",
    "Betancourt (2017), Identifying Bayesian Mixture Models (Stan case study)",
)
POSTERIORDB_REFERENCES = (
    "posteriordb: low_dim_gauss_mix-low_dim_gauss_mix (Magnusson et al.); "
    "stan-dev/stat_comp_benchmarks/benchmarks/low_dim_gauss_mix",
    "Betancourt (2017), Identifying Bayesian Mixture Models (Stan case study)",
)


class OrderedNormal(TorchDistribution):
    """The K order statistics of K iid Normal(loc, scale) draws.

    p(x) = K! prod_k Normal(x[k] | loc, scale)  on  x[0] < x[1] < ... < x[K-1]

    i.e. the iid Normal prior folded onto the ordered vectors (Stan's ``ordered[K] x;
    x ~ normal(loc, scale)``, with the K! that makes it a proper density). Sampling sorts K
    iid draws; the support is ``constraints.ordered_vector`` (unconstrained by Pyro's
    ``OrderedTransform``).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.ordered_vector
    has_rsample = True

    def __init__(self, loc, scale, size: int, validate_args=None):
        self.loc, self.scale = broadcast_all(loc, scale)
        self.size = int(size)
        super().__init__(self.loc.shape, torch.Size([self.size]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(OrderedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc, new.scale = self.loc.expand(batch_shape), self.scale.expand(batch_shape)
        new.size = self.size
        super(OrderedNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        eps = _standard_normal(shape, dtype=self.loc.dtype, device=self.loc.device)
        return (self.loc.unsqueeze(-1) + self.scale.unsqueeze(-1) * eps).sort(-1).values

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        iid = dist.Normal(self.loc.unsqueeze(-1), self.scale.unsqueeze(-1)).log_prob(value)
        return iid.sum(-1) + math.lgamma(self.size + 1)


def _num_data(y: Tensor | None, N: int | None, model: str) -> int:
    if y is not None:
        return y.shape[-1]
    if N is None:
        raise ZooError(f"{model}: give the observations 'y' or their number 'N'")
    return int(N)


@register_model(
    methods=("chees", "nuts", "svi", "laplace"),
    observed=("y",),
    data_shapes={"y": ("N",)},
    default_dataset="mixture_synthetic",
    references=GMM_REFERENCES,
)
def gaussian_mixture(y: Tensor | None = None, N: int | None = None, K: int = 2,
                     concentration: float = 1.0, loc_scale: float = 5.0, scale_sd: float = 1.0):
    """A K-component 1-D Gaussian mixture whose assignments z[n] are enumerated out.

    weights ~ Dirichlet(concentration * 1_K)
    locs ~ OrderedNormal(0, loc_scale, K)  (iid Normal(0, loc_scale) folded onto
                                            locs[0] < ... < locs[K-1])
    scales[k] ~ LogNormal(0, scale_sd),  k = 1..K
    z[n] ~ Categorical(weights)  (infer={"enumerate": "parallel"}: summed out, never sampled)
    y[n] ~ Normal(locs[z[n]], scales[z[n]]),  n = 1..N
    so y[n] ~ sum_k weights[k] Normal(locs[k], scales[k]) once z is summed out.

    The ordering of locs breaks label switching (module docstring). LogNormal scales, not
    HalfNormal: a mixture's likelihood grows without bound as one component shrinks onto one
    point (scale -> 0), and a HalfNormal prior, finite at 0, lets the joint density follow it
    (no mode, so no Laplace, and degenerate SVI optima); the LogNormal density vanishes faster
    than any power of the scale at 0, so the joint has a proper interior mode. All four methods
    work on the continuous parameters (weights, locs, scales); the zoo sums z out for each.
    """
    num_data = _num_data(y, N, "gaussian_mixture")
    # Component parameters are event-shaped vectors (no components plate), so under any batch
    # of draws they sit at (..., K) and Vindex picks component z[n] for every draw alike.
    weights = pyro.sample("weights", dist.Dirichlet(concentration * torch.ones(K)))
    locs = pyro.sample("locs", OrderedNormal(0.0, loc_scale, K))
    scales = pyro.sample("scales", dist.LogNormal(0.0, scale_sd).expand([K]).to_event(1))
    with pyro.plate("data", num_data, dim=-1):
        z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
        return pyro.sample("y", dist.Normal(Vindex(locs)[..., z], Vindex(scales)[..., z]), obs=y)


@register_model(
    methods=("chees", "nuts", "svi", "laplace"),
    observed=("y",),
    data_shapes={"y": ("N",)},
    default_dataset="low_dim_gauss_mix_synthetic",
    posteriordb=("low_dim_gauss_mix-low_dim_gauss_mix",),
    references=POSTERIORDB_REFERENCES,
)
def low_dim_gauss_mix(y: Tensor | None = None, N: int | None = None):
    """posteriordb's two-component 1-D Gaussian mixture, marginalised as Stan's log_mix.

    mu ~ OrderedNormal(0, 2, 2)  (Stan: ordered[2] mu; mu ~ normal(0, 2))
    sigma[k] ~ HalfNormal(2),  k = 1, 2
    theta ~ Beta(5, 5)
    y[n] ~ theta Normal(mu[0], sigma[0]) + (1 - theta) Normal(mu[1], sigma[1]),  n = 1..N

    Site names and shapes are posteriordb's (mu[2], sigma[2], theta), so draws compare directly
    with its reference posterior. The likelihood is ``MixtureSameFamily``, the same sum over
    the two components that Stan's ``log_mix`` computes; enumerating an explicit z[n] would give
    the same density at the cost of Pyro's enumeration machinery, and with no discrete site
    every method, many-chain HMC and Laplace included, runs on the plain log density.
    """
    num_data = _num_data(y, N, "low_dim_gauss_mix")
    mu = pyro.sample("mu", OrderedNormal(0.0, 2.0, 2))
    sigma = pyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = pyro.sample("theta", dist.Beta(5.0, 5.0))
    mixing = dist.Categorical(probs=torch.stack([theta, 1.0 - theta], dim=-1))
    with pyro.plate("data", num_data, dim=-1):
        return pyro.sample("y", dist.MixtureSameFamily(mixing, dist.Normal(mu, sigma)), obs=y)
