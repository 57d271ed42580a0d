"""``zoo.fit``: one entry point for every inference method, one ``Fit`` out.

    fit = zoo.fit("eight_schools_noncentered", data, method="nuts", seed=0, num_chains=4)

``model`` is a registered name or any plain Pyro model function whose observed values are
keyword arguments (or ``pyro.factor`` terms); ``data`` a dict of arrays/tensors (integer arrays
stay int64, observed values take the fit's float dtype). ``method="mcmc"`` (the default) picks
the best MCMC the zoo has for the model: many-chain ChEES-HMC ("chees"), which vectorises any
model written for one draw over chains (``vmap``); only a model that cannot be vectorised (Python
control flow on a latent) falls back to NUTS, and the Fit says so in ``info["fallback"]``.

``device`` ("cpu", "cuda", "cuda:N") places the methods that gain from a GPU ("chees" and "svi")
on it; the Fit and everything after inference stay on the CPU.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import time
import warnings
from typing import Any, Callable, Mapping

import numpy as np
import pyro
import torch

from .. import tracing
from ..data import as_float, is_integer, prepare, to_device
from ..logdensity import check_fixed_supports
from ..errors import ConvergenceWarning, ZooError, did_you_mean, unknown
from ..fit import Fit, default_dtype
from ..registry import METHODS, ModelSpec, get_model
from ..logdensity import NotVectorisable
from .base import RunOutput
from .settings import (SETTINGS, CheesSettings, LaplaceSettings, NUTSSettings, SVISettings,
                       validate_settings)

__all__ = ["fit", "resolve", "SETTINGS", "validate_settings", "NUTSSettings", "CheesSettings",
           "SVISettings", "LaplaceSettings", "resolve_method", "resolve_device"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32}
_DEVICES = ("cpu", "cuda", "cuda:N")
# Methods that run on the CPU whatever the device, and why a GPU would not help them.
_CPU_ONLY = {
    "nuts": "Pyro's NUTS spends its time on per-chain Python overhead, not arithmetic",
    "laplace": "Laplace is small dense linear algebra",
}


def resolve_device(name: str | torch.device) -> torch.device:
    """Check a device name ("cpu", "cuda", "cuda:N") against this machine; a ``ZooError`` says
    what is wrong (unknown name, no CUDA here, no such GPU)."""
    name = str(name)
    if not re.fullmatch(r"cpu|cuda(:(0|[1-9][0-9]*))?", name):
        # "gpu" is closest to "cpu" by spelling, but means CUDA
        hint = did_you_mean("cuda" if name.lower().startswith("gpu") else name.lower(), _DEVICES)
        raise ZooError(f"unknown device {name!r}{hint}; allowed: cpu, cuda, cuda:N "
                       "(N the index of a CUDA device)")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = (f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
                     if torch.version.cuda is None else
                     f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU")
            raise ZooError(f"device {name!r} requested, but this machine has no CUDA: {build}; "
                           "use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ZooError(f"device {name!r} requested, but this machine has "
                           f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 upwards)")
    return device


def resolve_method(method: str, spec: ModelSpec | None = None) -> str:
    """Map ``"mcmc"`` to the best MCMC the model supports and check the method exists."""
    if method == "mcmc":
        vectorises = spec is None or (spec.vectorizable and "chees" in spec.methods)
        method = "chees" if vectorises else "nuts"
    if method not in METHODS:
        raise unknown("method", method, list(METHODS) + ["mcmc"])
    if spec is not None and method not in spec.methods:
        raise ZooError(
            f"model {spec.name!r} does not support method {method!r}; it supports "
            f"{', '.join(spec.methods)}"
        )
    return method


def resolve(model: str | Callable | ModelSpec, data: Mapping[str, Any], dtype=torch.float64):
    """(spec, prepared data) for a registered name, a spec, or a plain Pyro function."""
    if isinstance(model, ModelSpec):
        spec = model
    elif isinstance(model, str):
        spec = get_model(model)
    elif callable(model):
        spec = ModelSpec(
            name=getattr(model, "__name__", "model"),
            fn=model,
            family="user",
            description=inspect.getdoc(model) or "a user-supplied Pyro model",
            observed=(),
        )
    else:
        raise ZooError(f"model must be a registered name or a Pyro function, got {model!r}")
    with default_dtype(dtype):
        prepared = prepare(spec, data, dtype)
        if spec.family == "user":
            keys, prepared = _observed_keys(spec, prepared, dtype)
            prepared = as_float(prepared, set(keys.values()), dtype)
            if not keys and not tracing.factor_sites(tracing.structure(spec.fn, prepared)):
                raise ZooError(
                    f"model {spec.name!r} has no observed sites with the data given "
                    f"(keys: {', '.join(prepared)}) and no pyro.factor terms; pass observations as "
                    "keyword arguments"
                )
            spec = dataclasses.replace(spec, observed=tuple(keys.values()))
            check_fixed_supports(spec, prepared)  # registered models are tested for it
    return spec, prepared


def _observed_keys(spec: ModelSpec, data: dict, dtype: torch.dtype) -> tuple[dict, dict]:
    """The user's model's observed sites -> data keys, and the data it runs on: integer arrays
    as given (indices), or, if the model fails on them (``X @ beta`` with an integer ``X``),
    every integer array in ``dtype``."""
    try:
        return tracing.observed_keys(spec.fn, data), data
    except Exception as e:  # the user's model failed on the user's data
        error = e
    floats = as_float(data, [k for k, v in data.items() if is_integer(v)], dtype)
    if any(is_integer(v) for v in data.values()):
        try:
            return tracing.observed_keys(spec.fn, floats), floats
        except Exception:
            pass
    raise ZooError(f"model {spec.name!r} failed on the data: {type(error).__name__}: {error}") from error


def fit(
    model: str | Callable | ModelSpec,
    data: Mapping[str, Any],
    method: str = "mcmc",
    seed: int = 0,
    progress: bool = False,
    dtype: str = "float64",
    device: str | torch.device = "cpu",
    **settings,
) -> Fit:
    """Fit ``model`` to ``data`` with ``method`` ("chees", "nuts", "svi", "laplace" or "mcmc")
    on ``device`` ("cpu", "cuda", "cuda:N"; "nuts" and "laplace" always run on the CPU)."""
    torch_device = resolve_device(device)  # before anything runs
    if dtype not in _DTYPES:
        raise unknown("dtype", dtype, _DTYPES)
    torch_dtype = _DTYPES[dtype]
    spec, prepared = resolve(model, data, torch_dtype)
    method = resolve_method(method, spec)
    config = validate_settings(method, settings, where=f"{method} settings")
    runner = _runner(method)
    on = torch.device("cpu") if method in _CPU_ONLY else torch_device
    start = time.perf_counter()
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    with default_dtype(torch_dtype):
        try:
            try:
                out = _run_on(on, runner, spec, prepared, config, seed, progress)
            except NotVectorisable as e:
                method, config, out = _nuts_instead(spec, prepared, config, e, seed, progress)
        except (RuntimeError, ValueError) as e:
            if isinstance(e, ZooError):
                raise
            raise ZooError(
                f"{method} failed on model {spec.name!r}: {type(e).__name__}: {str(e).splitlines()[0]}"
            ) from e
        observed = tracing.observed_keys(spec.fn, prepared)
        posterior = _with_deterministic(spec, prepared, out.latents)
    result = Fit(
        spec=spec,
        method=method,
        posterior=posterior,
        latent_names=list(out.latents),
        sample_stats={k: np.asarray(v) for k, v in out.sample_stats.items()},
        data=prepared,
        observed=observed,
        settings={"seed": seed, "dtype": dtype, "device": str(torch_device),
                  **dataclasses.asdict(config)},
        info=out.info,
        warnings=list(out.warnings),
        guide=out.guide,
    )
    result.info["time_s"] = time.perf_counter() - start
    result.info["versions"] = versions()
    if method in _CPU_ONLY and torch_device.type != "cpu":
        result.info["device_note"] = (f"{method} ran on the CPU, not {torch_device}: "
                                      f"{_CPU_ONLY[method]}, so a GPU would not speed it up")
    # Failed checks become warnings on the Fit (and Python warnings): never hidden.
    from ..diagnostics import failed_checks

    with default_dtype(torch_dtype):
        failed = [w for w in failed_checks(result) if w not in result.warnings]
    for w in failed:
        warnings.warn(f"{spec.name} {method}: {w}", ConvergenceWarning, stacklevel=2)
    result.warnings += failed
    return result


def _runner(method: str) -> Callable:
    import importlib

    module, name = {"nuts": ("mcmc", "run_nuts"), "chees": ("chees", "run_chees"),
                    "svi": ("svi", "run_svi"), "laplace": ("laplace", "run_laplace")}[method]
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def _run_on(device: torch.device, runner: Callable, spec: ModelSpec, data: Mapping,
            config: Any, seed: int, progress: bool) -> RunOutput:
    """``runner`` on ``device``; the runners hand back CPU results. Factory calls in the model
    (``torch.zeros``, constants in distributions) land on the device too. The Fit keeps
    ``data`` on the CPU, where everything after inference runs."""
    if device.type == "cpu":  # exactly as without a device (the context costs per torch call)
        return runner(spec, data, config, seed=seed, progress=progress)
    with torch.device(device):
        return runner(spec, to_device(data, device), config, seed=seed, progress=progress)


def _nuts_instead(spec: ModelSpec, data: Mapping, config: CheesSettings, error: Exception,
                  seed: int, progress: bool):
    """The model's log density does not vectorise over chains: run Pyro's NUTS and say so.

    Sizes the user set carry over (chains capped at 4: one NUTS chain costs what 128 vectorised
    ones do); the rest are NUTS's defaults, since 128 chains of 100 draws suit only chees."""
    from .mcmc import run_nuts

    default = CheesSettings()
    given = {k: getattr(config, k) for k in ("num_warmup", "num_samples", "num_chains")
             if getattr(config, k) != getattr(default, k)}
    if "num_chains" in given:
        given["num_chains"] = min(given["num_chains"], 4)
    nuts = NUTSSettings(init_strategy=config.init_strategy, dense_mass=config.dense_mass, **given)
    note = (f"model {spec.name!r} cannot run many chains in one pass ({error}); "
            f"ran Pyro NUTS instead ({nuts.num_chains} chains x {nuts.num_samples} draws after "
            f"{nuts.num_warmup} warmup)")
    warnings.warn(note, UserWarning, stacklevel=4)
    out = run_nuts(spec, data, nuts, seed=seed, progress=progress)
    out.info["fallback"] = note
    return "nuts", nuts, out


def _with_deterministic(spec: ModelSpec, data: Mapping, latents: Mapping[str, torch.Tensor]) -> dict:
    """Add ``pyro.deterministic`` sites (e.g. theta = mu + tau·theta_trans) to the draws."""
    first = next(iter(latents.values()))
    c, d = first.shape[:2]
    flat = {k: v.reshape((c * d,) + tuple(v.shape[2:])) for k, v in latents.items()}
    ref = tracing.get_trace(spec.fn, data, {k: v[0] for k, v in flat.items()})
    det = tracing.deterministic_sites(ref)
    extra = tracing.evaluate(spec.fn, flat, data, sites=det, vectorize=spec.vectorizable) if det else {}
    out = {k: v.detach().cpu().numpy() for k, v in latents.items()}
    out.update({k: v.detach().cpu().numpy().reshape((c, d) + tuple(v.shape[1:])) for k, v in extra.items()})
    return out


def versions() -> dict[str, str]:
    import platform
    from importlib.metadata import version

    import pandas

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "arviz": version("arviz"),  # importing ArviZ takes ~2 s, which a fit does not need
        "numpy": np.__version__,
        "pandas": pandas.__version__,
    }
