"""Typed settings for every inference method, validated in one place.

The dataclasses are the schema: recipes and ``zoo.fit(**settings)`` go through
``validate_settings`` so an unknown key, a wrong type or an out-of-range value gets the same
one-line error naming where it came from and what is allowed.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from ..errors import ZooError, unknown

InitStrategy = Literal["uniform", "median", "mean", "sample", "feasible"]


@dataclass(frozen=True)
class NUTSSettings:
    num_warmup: int = 1000
    num_samples: int = 1000  # per chain
    num_chains: int = 4
    target_accept: float = 0.8
    max_tree_depth: int = 10
    init_strategy: InitStrategy = "uniform"  # Stan's default: uniform on (-2, 2) unconstrained
    parallel: bool = False  # chains in processes; sequential is robust everywhere
    jit: bool = False  # torch.jit-traced potential (Pyro's jit_compile); eager if tracing fails
    dense_mass: bool = False


@dataclass(frozen=True)
class CheesSettings:
    """Many-chain HMC with ChEES trajectory lengths (zoo.inference.chees). Zeros mean "chosen
    for the model": chains from the cost of one gradient, draws until ``target_ess``."""

    num_warmup: int = 1000  # "adaptive": at most this many; "fixed": exactly this many
    warmup: Literal["adaptive", "fixed"] = "adaptive"  # adaptive stops once adaptation settles
    num_samples: int = 0  # per chain; 0: until min bulk and tail ESS >= target_ess
    # 2000: a posterior sd's relative Monte Carlo error is about sqrt((kurtosis - 1) / (4 ESS)),
    # ~3.5% at 1000 for eight schools' heavy-tailed theta, so posteriordb's 10% criterion
    # failed by noise (sd ratio 1.107 at seed 0); 2000 brings it to ~2.5% (Stan's default
    # run gives ~4000 on such posteriors)
    target_ess: int = 2000
    max_samples: int = 1000  # per chain, when num_samples = 0
    num_chains: int = 0  # 0: 16-128, fewest where each chain's gradient costs arithmetic
    num_superchains: int = 0  # chains in a superchain share a start point (nested R-hat); 0: auto
    target_accept: float = 0.651  # harmonic mean over chains (Hoffman, Radul & Sountsov 2021)
    max_leapfrog: int = 1000
    trajectory_lr: float = 0.025  # Adam on log T, maximising the ChEES criterion
    init_strategy: InitStrategy = "uniform"
    init_lbfgs: bool = True  # move each start by L-BFGS into the posterior's bulk (zoo.inference.start)
    # auto: Fisher diagonal, dense when strongly correlated; "variance": Stan's diagonal, which
    # takes smaller steps in a funnel (fewer divergences there, more gradients elsewhere)
    metric: Literal["auto", "diag", "dense", "variance"] = "auto"
    dense_mass: bool = False  # True is metric = "dense"
    jit: bool = True  # record value and gradient into one traced program (checked; else autograd)
    threads: int = 0  # torch threads while sampling; 0: 1 or 2 from the gradient's size


@dataclass(frozen=True)
class SVISettings:
    guide: Literal["normal", "lowrank_mvn", "mvn", "delta", "model"] = "normal"
    elbo: Literal["trace", "meanfield"] = "trace"  # meanfield = TraceMeanField_ELBO (analytic KL)
    num_particles: int = 1
    optimizer: Literal["adam", "clipped_adam"] = "adam"
    lr: float = 0.01
    lr_decay: float = 0.1  # final lr = lr * lr_decay, reached exponentially over num_steps
    num_steps: int = 5000
    tol: float = 1e-4  # stop when the smoothed ELBO's relative change over a window is below
    window: int = 200
    subsample_size: int = 0  # 0 = full batch; else the model's data plate subsamples
    num_samples: int = 1000  # iid draws from the fitted guide
    rank: int = 0  # lowrank_mvn rank; 0 = Pyro's default (sqrt of the dimension)
    init_scale: float = 0.1
    jit: bool = True  # JIT-compiled, vectorised ELBO where the model allows (checked, else plain)


@dataclass(frozen=True)
class LaplaceSettings:
    num_samples: int = 1000  # iid draws from the Gaussian approximation
    adam_steps: int = 1000
    lr: float = 0.05
    lbfgs_steps: int = 200
    init_strategy: InitStrategy = "median"


SETTINGS: dict[str, type] = {"nuts": NUTSSettings, "chees": CheesSettings, "svi": SVISettings,
                             "laplace": LaplaceSettings}

# Values that must be positive / within (0, 1); everything else only needs the right type.
_POSITIVE = {"num_samples", "num_chains", "max_tree_depth", "num_particles", "num_steps", "window",
             "lr", "adam_steps", "init_scale", "max_leapfrog", "trajectory_lr", "target_ess",
             "max_samples"}
_NONNEGATIVE = {"num_warmup", "subsample_size", "rank", "lbfgs_steps", "tol", "num_superchains",
                "threads"}
# Settings where 0 means "chosen for the model" (chees); positive for every other method.
_ZERO_IS_AUTO = {("chees", "num_samples"), ("chees", "num_chains")}
_UNIT = {"target_accept", "lr_decay"}


def _check_type(where: str, key: str, value: Any, hint: Any) -> Any:
    if typing.get_origin(hint) is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise unknown(f"value for {where}.{key}:", str(value), allowed)
        return value
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise ZooError(f"{where}.{key} must be {hint.__name__}, got {value!r}")
    return value


def validate_settings(method: str, settings: Mapping[str, Any], where: str = "settings"):
    """Build the method's settings dataclass from ``settings`` or raise a ``ZooError``."""
    if method not in SETTINGS:
        raise unknown("method", method, list(SETTINGS) + ["mcmc"])
    cls = SETTINGS[method]
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    out = {}
    for key, value in settings.items():
        if key not in fields:
            raise unknown(f"setting for {method} in {where}:", key, fields)
        value = _check_type(where, key, value, hints[key])
        if key in _POSITIVE and not value > 0 and not ((method, key) in _ZERO_IS_AUTO and value == 0):
            raise ZooError(f"{where}.{key} must be > 0, got {value!r}")
        if key in _NONNEGATIVE and value < 0:
            raise ZooError(f"{where}.{key} must be >= 0, got {value!r}")
        if key in _UNIT and not 0 < value <= 1:
            raise ZooError(f"{where}.{key} must be in (0, 1], got {value!r}")
        out[key] = value
    return cls(**out)
