"""Stochastic variational inference with Pyro's autoguides or the model's own guide.

Minibatching goes through the model's ``pyro.plate(..., subsample_size=B)``: Pyro then scales
the likelihood by N/B, so the KL term of the ELBO is counted once for the whole data set.
The run stops when the smoothed ELBO's relative change over ``window`` steps falls below
``tol``; a NaN ELBO is an error and an ELBO still falling at the end is a warning.
"""

from __future__ import annotations

import inspect
import math
import sys
import warnings
from typing import Mapping

import numpy as np
import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO, autoguide

from ..errors import ConvergenceWarning, ZooError
from ..registry import ModelSpec
from .base import RunOutput
from .settings import SVISettings


def make_guide(spec: ModelSpec, config: SVISettings):
    model = spec.fn
    init = autoguide.init_to_median
    if config.guide == "model":
        if spec.guide is None:
            raise ZooError(f"model {spec.name!r} has no guide of its own; use guide = 'normal', "
                           "'lowrank_mvn', 'mvn' or 'delta'")
        return spec.guide
    if config.guide == "normal":
        return autoguide.AutoNormal(model, init_loc_fn=init, init_scale=config.init_scale)
    if config.guide == "lowrank_mvn":
        return autoguide.AutoLowRankMultivariateNormal(
            model, init_loc_fn=init, init_scale=config.init_scale, rank=config.rank or None
        )
    if config.guide == "mvn":
        return autoguide.AutoMultivariateNormal(model, init_loc_fn=init, init_scale=config.init_scale)
    return autoguide.AutoDelta(model, init_loc_fn=init)


def _optimizer(config: SVISettings):
    # Exponential decay from lr to lr * lr_decay over num_steps (per-step factor gamma).
    gamma = config.lr_decay ** (1.0 / config.num_steps)
    if config.optimizer == "clipped_adam":
        return pyro.optim.ClippedAdam({"lr": config.lr, "lrd": gamma, "clip_norm": 10.0})
    return pyro.optim.ExponentialLR(
        {"optimizer": torch.optim.Adam, "optim_args": {"lr": config.lr}, "gamma": gamma}
    )


def _trend(losses: list[float], window: int) -> tuple[float, float]:
    """Change of the mean loss between the last two windows: (relative size, z-score).

    The z-score divides the change by its standard error, so a noisy ELBO is not mistaken
    for one that is still improving."""
    last, prev = np.asarray(losses[-window:]), np.asarray(losses[-2 * window : -window])
    diff = prev.mean() - last.mean()  # > 0: the loss is still falling
    se = math.sqrt((last.var() + prev.var()) / window) or 1e-12
    return abs(diff) / max(abs(last.mean()), 1e-12), diff / se


def run_svi(spec: ModelSpec, data: Mapping, config: SVISettings, seed: int = 0,
            progress: bool = False) -> RunOutput:
    model_data = dict(data)
    if config.subsample_size:
        if "subsample_size" not in inspect.signature(spec.fn).parameters:
            raise ZooError(f"model {spec.name!r} does not support minibatching (no subsample_size "
                           "argument); set svi subsample_size = 0")
        model_data["subsample_size"] = config.subsample_size
    guide = make_guide(spec, config)
    elbo_cls = TraceMeanField_ELBO if config.elbo == "meanfield" else Trace_ELBO
    optim = _optimizer(config)
    # Particles in one vectorised pass (an outer plate) for registered models, which are
    # plate-correct by contract; a user's model may not be, so its particles run in a loop.
    vectorize = spec.vectorizable and spec.family != "user" and config.num_particles > 1
    svi = SVI(spec.fn, guide, optim, loss=elbo_cls(num_particles=config.num_particles,
                                                    vectorize_particles=vectorize))
    losses: list[float] = []
    stopped_early = False
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_steps, desc=f"svi {spec.name}", leave=False)
    for step in range(config.num_steps):
        try:
            loss = svi.step(**model_data)
        except ValueError as e:  # parameters left the support: Pyro's validation caught it
            if step == 0:
                raise
            loss = float("nan")
            cause = str(e).splitlines()[0]
        else:
            cause = ""
        if not math.isfinite(loss):
            raise ZooError(
                f"svi on model {spec.name!r}: the ELBO became {loss} at step {step} (diverged"
                f"{': ' + cause[:80] if cause else ''}); lower lr (now {config.lr}) or use "
                "optimizer = 'clipped_adam'"
            )
        losses.append(loss)
        if isinstance(optim, pyro.optim.PyroLRScheduler):
            optim.step()
        if bar is not None and step % 50 == 0:
            bar.update(50)
            bar.set_postfix(elbo=-loss)
        if config.tol and len(losses) >= 2 * config.window and step % config.window == 0:
            if _trend(losses, config.window)[0] < config.tol:
                stopped_early = True
                break
    if bar is not None:
        bar.close()
    out_warnings = []
    if len(losses) < 2 * config.window:
        out_warnings.append(
            f"the ELBO's convergence could not be assessed: {len(losses)} steps < 2 × window "
            f"({config.window}); raise num_steps or lower window"
        )
    elif not stopped_early:
        change, z = _trend(losses, config.window)
        if z > 2 and change >= config.tol:
            out_warnings.append(
                f"the ELBO was still improving after {config.num_steps} steps (relative change "
                f"{change:.2g} over the last {config.window} steps > tol {config.tol}); "
                "raise num_steps or lr"
            )
    for w in out_warnings:
        warnings.warn(f"{spec.name} svi: {w}", ConvergenceWarning, stacklevel=3)

    # iid draws of the latents from the fitted guide: one "chain" of num_samples draws.
    from ..tracing import guide_draws, latent_sites, max_plate_nesting, structure

    ref = structure(spec.fn, data)
    draws, _ = guide_draws(guide, data, config.num_samples, latent_sites(ref), max_plate_nesting(ref))
    latents = {k: v.unsqueeze(0) for k, v in draws.items()}
    state = pyro.get_param_store().get_state()
    info = {
        # the fitted guide's parameters, owned by the fit (see Fit.guide_scope)
        "param_store": {**state, "params": {k: v.detach().clone() for k, v in state["params"].items()}},
        "elbo": [-l for l in losses],
        "num_steps_run": len(losses),
        "stopped_early": stopped_early,
        "final_elbo": -float(np.mean(losses[-min(len(losses), config.window):])),
    }
    return RunOutput(latents, {}, info, out_warnings, guide)
