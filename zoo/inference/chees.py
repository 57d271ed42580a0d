"""Many chains at once: jittered HMC tuned by ChEES (Hoffman, Radul & Sountsov 2021), the
zoo's default MCMC for any model that vectorises over chains.

Pyro's NUTS pays Python overhead for every gradient of every chain. Here C chains move
together, and the log density and its gradient for all C come from one replay of a recorded
program (``LogJoint.value_and_grad``: the model, written for one draw, vectorised by ``vmap``
or an outer plate and recorded with its gradient), so the overhead is paid once per C chains and
the Pyro model is not in the loop at all. Every chain takes the same number of leapfrog steps;
the trajectory length is tuned across chains instead of by a per-chain NUTS tree.

From the call to the result:

1. **Set-up**: vectorise and record the density (checked against plain runs); choose the number
   of chains (16-128) and torch threads from the recorded program's size (``zoo.gradient.Cost``:
   small models are dispatch-bound, so chains are nearly free; large ones pay per chain); start
   each superchain at a point drawn uniformly on (-2, 2) in unconstrained space (Stan's
   default; never from the prior, so improper priors start too), then move it by L-BFGS to the
   edge of the posterior's bulk (``start``), whose inverse Hessian is the first metric.
2. **Warmup** (``adaptation``): step size, metric (from draws and gradients; dense when needed)
   and trajectory length, stopping as soon as they have settled and the superchains agree.
3. **Sampling** in blocks until min bulk and tail ESS over every coordinate reach
   ``target_ess`` and nested R-hat is below 1.01 (``stopping``), or ``num_samples`` if set.

Chains come in ``num_superchains`` groups that start from one point each, as nested R-hat
(Margossian et al. 2024) needs to judge many short chains.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from typing import Mapping

import numpy as np
import torch

from ..errors import ConvergenceWarning, ZooError
from ..gradient import chains_for, torch_threads
from ..logdensity import LogJoint, NotVectorisable, generator
from ..registry import ModelSpec
from .adaptation import RHAT_SETTLED, initial_metric, warmup
from .base import RunOutput
from .hmc import Sampler, halton, num_steps
from .convergence import min_ess, nested_rhat
from .settings import CheesSettings
from .start import lbfgs_start

RECORDED_CHAINS = 16  # chains the cost is measured at when the number is chosen
EXPECTED_WARMUP = 150  # iterations, for choosing the number of chains
MIN_DRAWS = 20  # per chain before the first ESS check: fewer make ESS estimates unreliable


def default_superchains(num_chains: int) -> int:
    """8 superchains when the chains divide into groups of at least 2, else fewer; a handful
    of chains is each its own superchain (then plain R-hat applies)."""
    return next((k for k in (8, 6, 4, 3, 2) if num_chains % k == 0 and num_chains >= 4 * k),
                num_chains)


def run_chees(spec: ModelSpec, data: Mapping, config: CheesSettings, seed: int = 0,
              progress: bool = False) -> RunOutput:
    t_start = time.perf_counter()
    if config.num_chains and config.num_superchains and config.num_chains % config.num_superchains:
        raise ZooError(f"chees: num_chains ({config.num_chains}) must be a multiple of "
                       f"num_superchains ({config.num_superchains})")
    try:
        lj = LogJoint(spec, data)
    except NotImplementedError as e:  # biject_to has no map for a discrete support
        raise NotVectorisable(f"a latent site is discrete ({e})") from e
    chains, value_and_grad, how, cost = _choose_chains(lj, config, seed)
    superchains = config.num_superchains or default_superchains(chains)
    threads = config.threads or cost.threads(chains, chains, os.cpu_count() or 1)
    gen = generator(seed)  # on the device the run is on (zoo.fit's torch.device context)
    kind = "dense" if config.dense_mass else config.metric
    with torch_threads(threads):
        q0 = _initial_points(spec, data, lj, value_and_grad, chains, superchains, config, gen)
        start = lbfgs_start(value_and_grad, q0) if config.init_lbfgs else None
        metric = initial_metric(start.inverse_hessian if start else None, lj.dim, kind,
                                torch.get_default_dtype())
        sampler = Sampler(value_and_grad, start.q if start else q0, metric, gen)
        t_setup = time.perf_counter()
        bar = _bar(progress, config, spec.name)
        adapted = warmup(sampler, config, superchains, lambda: _tick(bar),
                         whitened=start is not None and start.inverse_hessian is not None)
        t_warmup = time.perf_counter()
        warmup_gradients = sampler.num_gradients
        draws, records, stop = _sample(sampler, adapted, config, superchains, bar)
        if bar is not None:
            bar.close()
    t_end = time.perf_counter()

    # Results go back to the CPU (no-ops there), where everything after inference runs.
    u = torch.stack(draws, dim=1)  # (chain, draw, d)
    c, s = u.shape[:2]
    latents = {k: v.reshape((c, s) + v.shape[1:]).cpu() for k, v in
               lj.to_constrained(u.reshape(c * s, -1)).items()}
    sample_stats = {key: torch.stack([r[key] for r in records], dim=1).cpu().numpy()
                    for key in records[0]} if records else {}
    if sample_stats:
        sample_stats["diverging"] = sample_stats["diverging"].astype(bool)
        sample_stats["step_size"] = np.full((c, s), adapted.step_size)
    out_warnings = _warnings(sample_stats, config, spec.name, stop)
    info = {
        "log_density": how,
        "num_chains": c,
        "threads": threads,
        "step_size": adapted.step_size,
        "trajectory_length": adapted.trajectory_length,
        "metric": adapted.metric,
        "warmup_iterations": adapted.iterations,
        "warmup_stopped_early": adapted.stopped_early,
        "sampling_stopped": stop,
        "mean_leapfrog_steps": float(np.mean(sample_stats["n_steps"][0])) if sample_stats else 0.0,
        "num_superchains": superchains,
        "num_divergences": int(sample_stats["diverging"].sum()) if sample_stats else 0,
        "gradients_start": start.gradients if start else 0,
        "start_iterations": start.iterations if start else 0,
        "gradients_warmup": warmup_gradients,
        "gradients_sampling": sampler.num_gradients - warmup_gradients,
        "time_setup_s": t_setup - t_start,  # vectorising, recording, checks, initial points
        "time_warmup_s": t_warmup - t_setup,
        "time_sampling_s": t_end - t_warmup,
        "inverse_metric": sampler.metric.cov.cpu().numpy(),
    }
    return RunOutput(latents, sample_stats, info, out_warnings)


def _choose_chains(lj: LogJoint, config: CheesSettings, seed: int):
    """(chains, value_and_grad, how, cost): the user's number of chains, or the one with the
    least predicted time from the program's cost recorded at ``RECORDED_CHAINS``."""
    if config.num_chains:
        return (config.num_chains,) + lj.value_and_grad(config.num_chains, config.jit, seed)
    value_and_grad, how, cost = lj.value_and_grad(RECORDED_CHAINS, config.jit, seed)
    need = lambda c: max(MIN_DRAWS, 2 * config.target_ess / c)  # ESS ≈ half the draws
    choices = [c for c in (16, 32, 64, 128) if c % (config.num_superchains or 1) == 0]
    chains = chains_for(cost, RECORDED_CHAINS, EXPECTED_WARMUP, need, choices or (16,))
    if chains == RECORDED_CHAINS:
        return chains, value_and_grad, how, cost
    return (chains,) + lj.value_and_grad(chains, config.jit, seed)


def _initial_points(spec: ModelSpec, data: Mapping, lj: LogJoint, value_and_grad, chains: int,
                    superchains: int, config: CheesSettings, gen: torch.Generator) -> torch.Tensor:
    """One start per superchain, repeated for its chains. "uniform": U(-2, 2) in unconstrained
    space (as Pyro's and Stan's), redrawn where the density or its gradient is not finite;
    other strategies go through Pyro's initialisation."""
    per = chains // superchains
    if config.init_strategy != "uniform":
        from .laplace import potential

        starts = []
        for _ in range(superchains):
            _, u0, flat, _ = potential(spec, data, config.init_strategy)
            starts.append(lj.flat.flatten(flat.unflatten(u0)))
        return torch.stack(starts).repeat_interleave(per, dim=0)
    starts = torch.rand(superchains, lj.dim, generator=gen) * 4 - 2
    for _ in range(100):
        logp, grad = value_and_grad(starts.repeat_interleave(per, dim=0))
        ok = (torch.isfinite(logp) & torch.isfinite(grad).all(-1)).reshape(superchains, per)[:, 0]
        if bool(ok.all()):
            return starts.repeat_interleave(per, dim=0)
        fresh = torch.rand(superchains, lj.dim, generator=gen) * 4 - 2
        starts = torch.where(ok.unsqueeze(-1), starts, fresh)
    raise ZooError(f"chees on model {spec.name!r}: no starting point with a finite log density "
                   "and gradient in 100 uniform draws on (-2, 2) (unconstrained); check the model "
                   "and data, or set init_strategy")


def _sample(sampler: Sampler, adapted, config: CheesSettings, superchains: int, bar):
    """Draws (a list of (C, d)) and per-draw statistics, until ``num_samples`` per chain, or
    until min bulk and tail ESS reach ``target_ess`` with nested R-hat below 1.01."""
    fixed = config.num_samples > 0
    limit = config.num_samples if fixed else config.max_samples
    draws, records = [], []
    check_at, stop = MIN_DRAWS, "num_samples" if fixed else "max_samples"
    k = adapted.iterations
    for n in range(1, limit + 1):
        k += 1
        n_steps = num_steps(halton(k), adapted.trajectory_length, adapted.step_size,
                            config.max_leapfrog)
        stats = sampler.transition(adapted.step_size, n_steps)
        draws.append(sampler.q)
        records.append({"diverging": stats["diverging"], "energy": stats["energy"],
                        "lp": sampler.logp, "acceptance_rate": stats["accept_prob"],
                        "n_steps": torch.full_like(sampler.logp, n_steps)})
        _tick(bar)
        if fixed or n < check_at:
            continue
        u = torch.stack(draws, 1).cpu().numpy()
        ess = min_ess(u)
        agree = superchains in (1, u.shape[0]) or bool(np.all(nested_rhat(u, superchains)
                                                              < RHAT_SETTLED))
        if ess >= config.target_ess and agree:
            stop = f"min ESS {ess:.0f} >= target_ess {config.target_ess}"
            break
        # ESS grows about linearly with draws: aim just past the target (10% more), checking
        # again at least 5 draws on
        grow = config.target_ess / max(ess, 1.0) * 1.1 if ess < config.target_ess else 1.25
        check_at = min(limit, max(n + 5, math.ceil(n * min(grow, 4.0))))
    return draws, records, stop


def _warnings(stats: Mapping[str, np.ndarray], config: CheesSettings, name: str,
              stop: str) -> list[str]:
    out = []
    if stats:
        n_div = int(stats["diverging"].sum())
        if n_div:
            out.append(
                f"{n_div} divergent transitions after warmup ({n_div / stats['diverging'].size:.1%}); "
                "the posterior is not explored reliably (reparameterise, e.g. non-centered, or "
                "raise target_accept)")
        capped = float((stats["n_steps"][0] >= config.max_leapfrog).mean())
        if capped:
            out.append(f"{capped:.0%} of transitions hit max_leapfrog={config.max_leapfrog}")
    if stop == "max_samples":
        out.append(f"target_ess={config.target_ess} (with nested R-hat < {RHAT_SETTLED}) not "
                   f"reached in max_samples={config.max_samples} draws per chain")
    for w in out:
        warnings.warn(f"{name} chees: {w}", ConvergenceWarning, stacklevel=3)
    return out


def _bar(progress: bool, config: CheesSettings, name: str):
    if not (progress and sys.stderr.isatty()):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.num_warmup + (config.num_samples or config.max_samples),
                desc=f"chees {name}", leave=False)


def _tick(bar) -> None:
    if bar is not None:
        bar.update(1)
