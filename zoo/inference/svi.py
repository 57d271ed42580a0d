"""Stochastic variational inference with Pyro's autoguides or the model's own guide.

Minibatching goes through the model's ``pyro.plate(..., subsample_size=B)``: Pyro then scales
the likelihood by N/B, so the KL term of the ELBO is counted once for the whole data set.
The run stops when the smoothed ELBO's relative change over ``window`` steps falls below
``tol``; a NaN ELBO is an error and an ELBO still falling at the end is a warning.

ELBO paths (``fit.info["elbo_path"]``): with ``jit = true`` (the default) the ELBO and its
gradient are one ``torch.jit``-traced function (Pyro's ``JitTrace_ELBO``), which cuts Pyro's
per-step Python overhead; particles run in one pass under an outer plate ("vectorised") for
registered models when ``num_particles > 1`` (registered models are plate-correct by contract; a
user's model may not be, so its particles are unrolled in the trace). The trace is checked
before the first step, never assumed: a tensor turned into a Python value in the model's own
code (control flow the trace would freeze), a trace that fails, or a compiled ELBO or gradient
that differs from the plain one at the same parameters and random numbers, and the fit runs on
the plain path from the same starting state, saying why in ``fit.info["elbo_fallback"]``.

Enumerated sites (``infer={"enumerate": "parallel"}``) are summed out of the ELBO exactly:
Pyro's ``TraceEnum_ELBO`` (``JitTraceEnum_ELBO`` on the JIT path) with the model's plate
nesting, and a guide over the continuous sites only (an autoguide sees the model with the
enumerated sites hidden by ``poutine.block``).
"""

from __future__ import annotations

import inspect
import math
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import (SVI, JitTrace_ELBO, JitTraceEnum_ELBO, JitTraceMeanField_ELBO,
                        Trace_ELBO, TraceEnum_ELBO, TraceMeanField_ELBO, autoguide)
from pyro.infer.elbo import ELBO

from ..data import to_device
from ..errors import ConvergenceWarning, ZooError
from ..registry import ModelSpec
from ..tracing import enumerated_sites, guide_draws, latent_sites, max_plate_nesting, structure
from .base import INIT_STRATEGIES, RunOutput
from .base import freezes_a_value
from .settings import SVISettings


def make_guide(spec: ModelSpec, config: SVISettings, enumerated: Sequence[str] = ()):
    """The guide ``config.guide`` names; an autoguide covers the latents other than the
    ``enumerated`` sites, which the ELBO sums out (hidden from the autoguide's model)."""
    model = poutine.block(spec.fn, hide=list(enumerated)) if enumerated else spec.fn
    init = INIT_STRATEGIES["median"]  # a flat prior starts at a feasible point
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


# --------------------------------------------------------------------------------------------
# ELBO paths: JIT-compiled where the model allows (checked), else plain
# --------------------------------------------------------------------------------------------

_JIT_DEPRECATED = "`torch.jit.trace` is deprecated"


class _JitRefused(Exception):
    """The compiled ELBO cannot be trusted for this model; the message says why."""


@dataclass
class SVIRun:
    """Pyro's SVI on the ELBO path ``run_svi`` chose, ready to step."""

    svi: SVI
    guide: Callable
    optim: pyro.optim.PyroOptim
    model_data: dict[str, Any]  # the model's keyword arguments (with subsample_size if set)
    path: str  # "jit+vectorised", "jit", "plain+vectorised" or "plain"
    fallback: str | None = None  # why the JIT path was not taken, if it was tried

    def step(self) -> float:
        """One SVI step (and one step of the learning-rate schedule); returns the loss."""
        loss = self.svi.step(**self.model_data)
        if isinstance(self.optim, pyro.optim.PyroLRScheduler):
            self.optim.step()
        return loss


class _JitTraceMeanField_ELBO(JitTraceMeanField_ELBO):
    """Pyro's JitTraceMeanField_ELBO, keeping its trace.

    Pyro 1.9 stores the compiled loss as ``_differentiable_loss`` but looks for
    ``_loss_and_surrogate_loss`` to decide whether to compile, so it traces again on every step
    (slower than the plain ELBO, and out of step with its random numbers). Setting the attribute
    it looks for keeps the first trace; harmless once Pyro fixes this."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        self._loss_and_surrogate_loss = self._differentiable_loss
        return loss


def _model_data(spec: ModelSpec, data: Mapping, config: SVISettings) -> dict[str, Any]:
    model_data = dict(data)
    if config.subsample_size:
        if "subsample_size" not in inspect.signature(spec.fn).parameters:
            raise ZooError(f"model {spec.name!r} does not support minibatching (no subsample_size "
                           "argument); set svi subsample_size = 0")
        model_data["subsample_size"] = config.subsample_size
    return model_data


def _elbo(config: SVISettings, jit: bool, vectorize: bool, nesting: int,
          enumerated: bool = False) -> ELBO:
    if enumerated:  # sums the enumerated sites out; needs the true plate nesting
        cls = JitTraceEnum_ELBO if jit else TraceEnum_ELBO
        return cls(num_particles=config.num_particles, vectorize_particles=vectorize,
                   max_plate_nesting=nesting)
    if config.elbo == "meanfield":
        cls = _JitTraceMeanField_ELBO if jit else TraceMeanField_ELBO
    else:
        cls = JitTrace_ELBO if jit else Trace_ELBO
    # Vectorised particles need the plate nesting: stating it spares Pyro a guessing run of
    # model and guide, whose random draws would put the two ELBOs _check_jit compares out of step.
    return cls(num_particles=config.num_particles, vectorize_particles=vectorize,
               max_plate_nesting=nesting if vectorize else float("inf"))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}"


def _rng_state() -> dict:
    """Pyro's RNG state (CPU), plus the GPU's when running on one: draws there use its own."""
    state = pyro.util.get_rng_state()
    device = torch.get_default_device()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict) -> None:
    pyro.util.set_rng_state(state)
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], torch.get_default_device())


def _loss_and_grad(elbo: ELBO, model: Callable, guide: Callable, model_data: Mapping) -> torch.Tensor:
    """[loss, gradient for every parameter] as one vector: what an SVI step would apply."""
    params = [p for _, p in pyro.get_param_store().named_parameters()]
    for p in params:
        p.grad = None
    loss = elbo.loss_and_grads(model, guide, **model_data)
    grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    for p in params:
        p.grad = None
    return torch.cat([torch.tensor([float(loss)])] + [g.reshape(-1) for g in grads])


def _check_jit(jit: ELBO, plain: ELBO, model: Callable, guide: Callable, model_data: Mapping,
               num_checks: int = 2) -> None:
    """Compile ``jit`` and check it against ``plain``; raise ``_JitRefused`` if it is not safe.

    The first call traces (and creates the guide's parameters). Then, ``num_checks`` times, the
    compiled and the plain ELBO are evaluated at the same parameters and the same random numbers,
    and loss and gradient must agree to sqrt(machine epsilon) relative to the largest of them:
    that catches frozen control flow that the warnings missed, and randomness (e.g. minibatch
    indices) frozen into the trace. The trace runs as recorded here, i.e. drawing its random
    numbers in the plain ELBO's order: torch's graph optimiser, used for the steps, may reorder
    independent draws (it does for a low-rank Gaussian guide), which changes which number goes
    where but not the ELBO's distribution."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _loss_and_grad(jit, model, guide, model_data)
        except Exception as e:  # anything the tracer trips on means the plain path
            raise _JitRefused(f"tracing failed: {_one_line(e)}") from e
    for w in caught:
        if freezes_a_value(w):
            where = f"{os.path.basename(w.filename)}:{w.lineno}"
            raise _JitRefused(f"the model's code at {where} turns a tensor into a Python value, "
                              f"which a trace freezes ({str(w.message).split('.')[0]})")
    for w in caught:  # the model's own warnings still reach the user; the tracer's do not
        if not (issubclass(w.category, torch.jit.TracerWarning) or _JIT_DEPRECATED in str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    rtol = math.sqrt(torch.finfo(torch.get_default_dtype()).eps)
    for _ in range(num_checks):
        rng = _rng_state()
        try:
            with torch.jit.optimized_execution(False):
                got = _loss_and_grad(jit, model, guide, model_data)
            _set_rng_state(rng)
            want = _loss_and_grad(plain, model, guide, model_data)
        except Exception as e:
            raise _JitRefused(f"the compiled ELBO could not be checked: {_one_line(e)}") from e
        diff = float((got - want).abs().max())
        if not diff <= rtol * max(1.0, float(want.abs().max())):  # NaN fails too
            raise _JitRefused(
                f"the compiled ELBO differs from the plain one at the same parameters and random "
                f"numbers (loss {got[0]:.8g} vs {want[0]:.8g}; largest difference in loss or "
                f"gradient {diff:.2g})")


def setup_svi(spec: ModelSpec, data: Mapping, config: SVISettings) -> SVIRun:
    """SVI for ``spec.fn(**data)`` on the fastest ELBO path the model allows (module doc).

    A refused JIT path leaves no trace: the parameters it created are removed and the random
    state restored, so the plain path runs exactly as it would have with ``jit = false``."""
    model_data = _model_data(spec, data, config)
    ref = structure(spec.fn, data)
    nesting, enumerated = max_plate_nesting(ref), enumerated_sites(ref)
    if enumerated and config.elbo == "meanfield":
        raise ZooError(f"svi on model {spec.name!r}: elbo = 'meanfield' (TraceMeanField_ELBO) "
                       f"cannot sum out the enumerated sites {', '.join(enumerated)}; use "
                       "elbo = 'trace' (TraceEnum_ELBO is then used)")
    # One particle needs no particle plate; a user's model may not be plate-correct.
    vectorize = spec.vectorizable and spec.family != "user" and config.num_particles > 1
    path, fallback = "plain", None
    if config.jit:
        store = pyro.get_param_store()
        params_before, rng = set(store.keys()), _rng_state()
        guide = make_guide(spec, config, enumerated)
        elbo = _elbo(config, True, vectorize, nesting, bool(enumerated))
        try:
            _check_jit(elbo, _elbo(config, False, vectorize, nesting, bool(enumerated)), spec.fn,
                       guide, model_data)
            path = "jit"
        except _JitRefused as e:
            fallback = str(e)
            for name in set(store.keys()) - params_before:
                del store[name]
            _set_rng_state(rng)
    if path == "plain":
        guide = make_guide(spec, config, enumerated)
        elbo = _elbo(config, False, vectorize, nesting, bool(enumerated))
    optim = _optimizer(config)
    return SVIRun(SVI(spec.fn, guide, optim, loss=elbo), guide, optim, model_data,
                  path + ("+vectorised" if vectorize else ""), fallback)


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
    run = setup_svi(spec, data, config)
    losses: list[float] = []
    stopped_early = False
    bar = None
    if progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=config.num_steps, desc=f"svi {spec.name}", leave=False)
    for step in range(config.num_steps):
        try:
            loss = run.step()
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
    ref = structure(spec.fn, data)
    draws, _ = guide_draws(run.guide, data, config.num_samples, latent_sites(ref),
                           max_plate_nesting(ref))
    latents = {k: v.unsqueeze(0).cpu() for k, v in draws.items()}
    guide = run.guide
    if torch.get_default_device().type != "cpu":
        guide = guide_on_cpu(spec, config, data)
    state = pyro.get_param_store().get_state()
    info = {
        # the fitted guide's parameters, owned by the fit (see Fit.guide_scope)
        "param_store": {**state, "params": {k: v.detach().clone() for k, v in state["params"].items()}},
        "elbo": [-l for l in losses],
        "num_steps_run": len(losses),
        "stopped_early": stopped_early,
        "final_elbo": -float(np.mean(losses[-min(len(losses), config.window):])),
        "elbo_path": run.path,
    }
    if run.fallback:
        info["elbo_fallback"] = run.fallback
    return RunOutput(latents, {}, info, out_warnings, guide)


def guide_on_cpu(spec: ModelSpec, config: SVISettings, data: Mapping) -> Callable:
    """The fitted guide built afresh on the CPU, where the Fit uses it, with the fitted values
    moved into the param store in place of the device's: an autoguide, and the constraints in
    the param store, keep tensors (a support's bounds, say) on the device they were built on."""
    fitted = {k: v.detach().cpu() for k, v in pyro.get_param_store().named_parameters()}
    pyro.clear_param_store()
    with torch.device("cpu"), torch.no_grad():
        data = to_device(data, "cpu")
        ref = structure(spec.fn, data)
        enumerated = enumerated_sites(ref)
        guide = make_guide(spec, config, enumerated)
        # One ELBO evaluation creates every parameter (the guide's and any of the model's).
        elbo = (_elbo(config, False, False, max_plate_nesting(ref), True) if enumerated
                else Trace_ELBO())
        elbo.loss(spec.fn, guide, **_model_data(spec, data, config))
        for name, value in pyro.get_param_store().named_parameters():
            value.copy_(fitted[name])
    return guide
