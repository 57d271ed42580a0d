"""Linear regressions from Gelman & Hill's book (ARM), as posteriordb's Stan programs have them.

Twenty-five posteriordb posteriors on four data sets (earnings, kidiq, mesquite, nes) are one
model, a linear regression with Stan's flat priors,

    beta ~ flat on R^D,   sigma ~ flat on (0, inf)   (kidiq's first four: sigma ~ Cauchy+(0, 2.5))
    f(y[n]) ~ Normal(X[n] . beta, sigma),

that differ only in the predictors X (transformations and interactions of the data's columns)
and the outcome transform f (identity, log or log10). So each data set has one Pyro function,
and each Stan program is a named *variant* of it: a row of ``VARIANTS`` bound positionally with
``functools.partial`` (not a model argument, and picklable for chains in other processes).

A transformed outcome is the observed site's ``TransformedDistribution``: its density in the
data's own units differs from Stan's density of ``log(y)`` by the Jacobian of the data, which is
a constant, so the posterior is Stan's. The priors are improper (``ImproperUniform``): MCMC and
Laplace fit them, while evidence, the prior predictive and SBC are refused.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints, transforms
from torch import Tensor

from ..errors import ZooError
from ..registry import register_model

POSTERIORDB = (
    "Magnusson, Torgander, Bürkner, Zhang, Carpenter & Vehtari (2024), posteriordb: testing, "
    "benchmarking and developing Bayesian inference algorithms, arXiv:2407.04967"
)
ARM = ("Gelman & Hill (2007), Data Analysis Using Regression and Multilevel/Hierarchical "
       "Models, Cambridge University Press")


def _sd(x: Tensor) -> Tensor:
    return x.std(unbiased=True)  # Stan's sd() divides by N - 1


class Variant(NamedTuple):
    """One Stan program: its predictors (a constant column is added first), outcome transform
    and prior on sigma."""

    predictors: Callable[[dict], list[Tensor]]
    outcome: str = "identity"  # "identity" | "log" | "log10"
    sigma_scale: float | None = None  # Cauchy+(0, scale) on sigma; None: flat, as Stan's default
    posteriors: tuple[str, ...] = ()
    doc: str = ""


def _z(x: Tensor, scale: float = 1.0) -> Tensor:
    return (x - x.mean()) / (scale * _sd(x))


def _log_volume(d: dict) -> Tensor:
    return torch.log(d["diam1"] * d["diam2"] * d["canopy_height"])


def _log_area(d: dict) -> Tensor:
    return torch.log(d["diam1"] * d["diam2"])


def _log_shape(d: dict) -> Tensor:
    return torch.log(d["diam1"] / d["diam2"])


def _indicators(x: Tensor, levels) -> list[Tensor]:
    return [(x == level).to(torch.get_default_dtype()) for level in levels]


NES_YEARS = (1972, 1976, 1980, 1984, 1988, 1992, 1996, 2000)

VARIANTS: dict[str, Variant] = {
    # earnings: N, earn, height, male
    "earn_height": Variant(lambda d: [d["height"]], posteriors=("earnings-earn_height",),
                           doc="earn ~ Normal(beta0 + beta1 height, sigma)"),
    "log10earn_height": Variant(lambda d: [d["height"]], "log10",
                                posteriors=("earnings-log10earn_height",),
                                doc="log10(earn) ~ Normal(beta0 + beta1 height, sigma)"),
    "logearn_height": Variant(lambda d: [d["height"]], "log",
                              posteriors=("earnings-logearn_height",),
                              doc="log(earn) ~ Normal(beta0 + beta1 height, sigma)"),
    "logearn_height_male": Variant(lambda d: [d["height"], d["male"]], "log",
                                   posteriors=("earnings-logearn_height_male",),
                                   doc="log(earn) ~ Normal(beta0 + beta1 height + beta2 male, sigma)"),
    "logearn_interaction": Variant(
        lambda d: [d["height"], d["male"], d["height"] * d["male"]], "log",
        posteriors=("earnings-logearn_interaction",),
        doc="log(earn) ~ Normal(beta0 + beta1 height + beta2 male + beta3 height male, sigma)"),
    "logearn_interaction_z": Variant(
        lambda d: [_z(d["height"]), d["male"], _z(d["height"]) * d["male"]], "log",
        posteriors=("earnings-logearn_interaction_z",),
        doc="log(earn) ~ Normal(beta0 + beta1 z + beta2 male + beta3 z male, sigma), "
            "z = (height - mean) / sd"),
    "logearn_logheight_male": Variant(
        lambda d: [torch.log(d["height"]), d["male"]], "log",
        posteriors=("earnings-logearn_logheight_male",),
        doc="log(earn) ~ Normal(beta0 + beta1 log(height) + beta2 male, sigma)"),
    # kidiq: N, kid_score, mom_hs, mom_iq (+ mom_work in kidiq_with_mom_work)
    "kidscore_momhs": Variant(lambda d: [d["mom_hs"]], sigma_scale=2.5,
                              posteriors=("kidiq-kidscore_momhs",),
                              doc="kid_score ~ Normal(beta0 + beta1 mom_hs, sigma)"),
    "kidscore_momiq": Variant(lambda d: [d["mom_iq"]], sigma_scale=2.5,
                              posteriors=("kidiq-kidscore_momiq",),
                              doc="kid_score ~ Normal(beta0 + beta1 mom_iq, sigma)"),
    "kidscore_momhsiq": Variant(lambda d: [d["mom_hs"], d["mom_iq"]], sigma_scale=2.5,
                                posteriors=("kidiq-kidscore_momhsiq",),
                                doc="kid_score ~ Normal(beta0 + beta1 mom_hs + beta2 mom_iq, sigma)"),
    "kidscore_interaction": Variant(
        lambda d: [d["mom_hs"], d["mom_iq"], d["mom_hs"] * d["mom_iq"]], sigma_scale=2.5,
        posteriors=("kidiq-kidscore_interaction",),
        doc="kid_score ~ Normal(beta0 + beta1 mom_hs + beta2 mom_iq + beta3 mom_hs mom_iq, sigma)"),
    "kidscore_interaction_c": Variant(
        lambda d: [d["mom_hs"] - d["mom_hs"].mean(), d["mom_iq"] - d["mom_iq"].mean(),
                   (d["mom_hs"] - d["mom_hs"].mean()) * (d["mom_iq"] - d["mom_iq"].mean())],
        posteriors=("kidiq_with_mom_work-kidscore_interaction_c",),
        doc="kid_score ~ Normal(beta0 + beta1 hs + beta2 iq + beta3 hs iq, sigma), "
            "hs, iq centred at their means"),
    "kidscore_interaction_c2": Variant(
        lambda d: [d["mom_hs"] - 0.5, d["mom_iq"] - 100.0, (d["mom_hs"] - 0.5) * (d["mom_iq"] - 100.0)],
        posteriors=("kidiq_with_mom_work-kidscore_interaction_c2",),
        doc="kid_score ~ Normal(beta0 + beta1 hs + beta2 iq + beta3 hs iq, sigma), "
            "hs = mom_hs - 0.5, iq = mom_iq - 100"),
    "kidscore_interaction_z": Variant(
        lambda d: [_z(d["mom_hs"], 2.0), _z(d["mom_iq"], 2.0),
                   _z(d["mom_hs"], 2.0) * _z(d["mom_iq"], 2.0)],
        posteriors=("kidiq_with_mom_work-kidscore_interaction_z",),
        doc="kid_score ~ Normal(beta0 + beta1 hs + beta2 iq + beta3 hs iq, sigma), "
            "hs, iq = (x - mean) / (2 sd)"),
    "kidscore_mom_work": Variant(
        lambda d: _indicators(d["mom_work"], (2, 3, 4)),
        posteriors=("kidiq_with_mom_work-kidscore_mom_work",),
        doc="kid_score ~ Normal(beta0 + beta1 [work=2] + beta2 [work=3] + beta3 [work=4], sigma)"),
    # mesquite: N, weight, diam1, diam2, canopy_height, total_height, density, group
    "mesquite": Variant(
        lambda d: [d[k] for k in ("diam1", "diam2", "canopy_height", "total_height", "density",
                                  "group")],
        posteriors=("mesquite-mesquite",),
        doc="weight ~ Normal(beta0 + beta1 diam1 + beta2 diam2 + beta3 canopy_height "
            "+ beta4 total_height + beta5 density + beta6 group, sigma)"),
    "logmesquite": Variant(
        lambda d: [torch.log(d[k]) for k in ("diam1", "diam2", "canopy_height", "total_height",
                                             "density")] + [d["group"]], "log",
        posteriors=("mesquite-logmesquite",),
        doc="log(weight) ~ Normal(beta0 + beta1 log(diam1) + ... + beta5 log(density) "
            "+ beta6 group, sigma)"),
    "logmesquite_logvolume": Variant(
        lambda d: [_log_volume(d)], "log", posteriors=("mesquite-logmesquite_logvolume",),
        doc="log(weight) ~ Normal(beta0 + beta1 log(canopy volume), sigma)"),
    "logmesquite_logva": Variant(
        lambda d: [_log_volume(d), _log_area(d), d["group"]], "log",
        posteriors=("mesquite-logmesquite_logva",),
        doc="log(weight) ~ Normal(beta0 + beta1 log(volume) + beta2 log(area) + beta3 group, sigma)"),
    "logmesquite_logvas": Variant(
        lambda d: [_log_volume(d), _log_area(d), _log_shape(d), torch.log(d["total_height"]),
                   torch.log(d["density"]), d["group"]], "log",
        posteriors=("mesquite-logmesquite_logvas",),
        doc="log(weight) ~ Normal(beta0 + beta1 log(volume) + beta2 log(area) + beta3 log(shape) "
            "+ beta4 log(total_height) + beta5 log(density) + beta6 group, sigma)"),
    "logmesquite_logvash": Variant(
        lambda d: [_log_volume(d), _log_area(d), _log_shape(d), torch.log(d["total_height"]),
                   d["group"]], "log",
        posteriors=("mesquite-logmesquite_logvash",),
        doc="log(weight) ~ Normal(beta0 + beta1 log(volume) + beta2 log(area) + beta3 log(shape) "
            "+ beta4 log(total_height) + beta5 group, sigma)"),
    # nes: N, partyid7, real_ideo, race_adj, age_discrete, educ1, gender, income, year
    "nes": Variant(
        lambda d: [d["real_ideo"], d["race_adj"], *_indicators(d["age_discrete"], (2, 3, 4)),
                   d["educ1"], d["gender"], d["income"]],
        posteriors=tuple(f"nes{year}-nes" for year in NES_YEARS),
        doc="partyid7 ~ Normal(beta0 + beta1 real_ideo + beta2 race_adj + beta3..5 age group "
            "+ beta6 educ1 + beta7 gender + beta8 income, sigma)"),
}

_OUTCOME = {
    "identity": lambda: [],
    "log": lambda: [transforms.ExpTransform()],
    "log10": lambda: [transforms.AffineTransform(0.0, math.log(10.0)), transforms.ExpTransform()],
}


def linear(variant: str, observed: str, y: Tensor | None, columns: dict[str, Tensor]):
    """The shared model: flat beta over [1, predictors], sigma flat (or half-Cauchy), and
    ``f(y) ~ Normal(X beta, sigma)`` observed at the site named after the data key."""
    spec = VARIANTS[variant]
    missing = [k for k, v in columns.items() if v is None]
    if missing:
        raise ZooError(f"model {variant!r} needs data {missing}")
    predictors = spec.predictors(columns)
    X = torch.stack([torch.ones_like(predictors[0]), *predictors], dim=-1)
    num_data, num_coefficients = X.shape
    with pyro.plate("coefficients", num_coefficients, dim=-1):
        beta = pyro.sample("beta", dist.ImproperUniform(constraints.real, (), ()))
    sigma_prior = (dist.ImproperUniform(constraints.positive, (), ()) if spec.sigma_scale is None
                   else dist.HalfCauchy(torch.tensor(spec.sigma_scale)))
    sigma = pyro.sample("sigma", sigma_prior)
    # plate-correct: under an outer plate of S draws beta is (S, D) and sigma (S, 1)
    loc = (X @ beta.unsqueeze(-1)).squeeze(-1)
    likelihood = dist.Normal(loc, sigma)
    if spec.outcome != "identity":
        likelihood = dist.TransformedDistribution(likelihood, _OUTCOME[spec.outcome]())
    with pyro.plate("data", num_data, dim=-1):
        return pyro.sample(observed, likelihood, obs=y)


def earnings(variant: str, earn: Tensor | None = None, height: Tensor | None = None,
             male: Tensor | None = None, N: int | None = None):
    return linear(variant, "earn", earn, {"height": height, "male": male})


def kidiq(variant: str, kid_score: Tensor | None = None, mom_hs: Tensor | None = None,
          mom_iq: Tensor | None = None, mom_work: Tensor | None = None, N: int | None = None,
          mom_hs_new: float | None = None, mom_iq_new: float | None = None):
    # mom_hs_new, mom_iq_new: a new child's covariates, used only by posteriordb's
    # generated quantities
    columns = {"mom_hs": mom_hs, "mom_iq": mom_iq, "mom_work": mom_work}
    return linear(variant, "kid_score", kid_score, {k: columns[k] for k in _kidiq_keys(variant)})


def _kidiq_keys(variant: str) -> tuple[str, ...]:
    return ("mom_work",) if variant == "kidscore_mom_work" else ("mom_hs", "mom_iq")


def mesquite(variant: str, weight: Tensor | None = None, diam1: Tensor | None = None,
             diam2: Tensor | None = None, canopy_height: Tensor | None = None,
             total_height: Tensor | None = None, density: Tensor | None = None,
             group: Tensor | None = None, N: int | None = None):
    columns = {"diam1": diam1, "diam2": diam2, "canopy_height": canopy_height,
               "total_height": total_height, "density": density, "group": group}
    return linear(variant, "weight", weight, columns)


def nes(partyid7: Tensor | None = None, real_ideo: Tensor | None = None,
        race_adj: Tensor | None = None, age_discrete: Tensor | None = None,
        educ1: Tensor | None = None, gender: Tensor | None = None, income: Tensor | None = None,
        year: Tensor | None = None, N: int | None = None):
    columns = {"real_ideo": real_ideo, "race_adj": race_adj, "age_discrete": age_discrete,
               "educ1": educ1, "gender": gender, "income": income}
    return linear("nes", "partyid7", partyid7, columns)


_DATA_SETS = {  # data set function, observed key, the keys its columns come from
    "earnings": (earnings, "earn", ("height", "male")),
    "kidiq": (kidiq, "kid_score", ()),  # keys by variant: _kidiq_keys
    "mesquite": (mesquite, "weight", ("diam1", "diam2", "canopy_height", "total_height",
                                      "density", "group")),
}


def _data_set(variant: str) -> str:
    posterior = VARIANTS[variant].posteriors[0]
    return next(k for k in (*_DATA_SETS, "nes") if posterior.startswith(k))


for _name, _variant in VARIANTS.items():
    _set = _data_set(_name)
    if _set == "nes":
        _fn, _obs, _keys = nes, "partyid7", ("real_ideo", "race_adj", "age_discrete", "educ1",
                                             "gender", "income")
    else:
        _fn, _obs, _keys = _DATA_SETS[_set]
        _fn, _keys = partial(_fn, _name), _kidiq_keys(_name) if _set == "kidiq" else _keys
    _sigma = ("flat on (0, inf)" if _variant.sigma_scale is None
              else f"~ Cauchy+(0, {_variant.sigma_scale:g})")
    register_model(
        _fn,
        name=_name,
        family="arm",  # a partial's module is functools
        description=(
            f"{_set} regression {_name!r} with Stan's flat priors (posteriordb).\n\n"
            f"{_variant.doc}\nbeta flat on R^D (improper), sigma {_sigma}."
        ),
        observed=(_obs,),
        data_shapes={_obs: ("N",), **{k: ("N",) for k in _keys}},
        default_dataset="posteriordb",
        posteriordb=_variant.posteriors,
        references=(POSTERIORDB, ARM),
    )
del _name, _variant, _set, _fn, _obs, _keys, _sigma
