"""Simulation-based calibration (SBC) of any registered model × inference method.

For s = 1..N (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, arXiv:1804.06788):

    θ_s ~ p(θ),   y_s ~ p(y | θ_s)       (the model run forward on fixed covariates)
    θ_s^(1..L)    L roughly independent draws of the method's posterior given y_s
    r_s = #{ℓ : θ_s^(ℓ) < θ_s}           per scalar component (ties broken at random)

If the method's posterior is the true p(θ | y), θ_s is one more draw from it, so every r_s is
uniform on {0, ..., L}; ``zoo.sbc_result`` tests that (χ², ECDF band, rank mean and width) and
gives the verdict. This module makes the ranks.

Thinning to L draws: ``chees`` keeps the final draw of L of its chains (independent chains after
warmup); ``nuts`` keeps L draws evenly spaced over its chains (each simulation's min bulk ESS is
recorded: below L the thinned draws are autocorrelated); ``svi``/``laplace`` keep L of their iid
draws from the approximation; ``exact`` draws L from the model's closed-form marginals. A fit that
raises, or runs over ``fit_timeout`` CPU-s, is counted as failed (no rank); a fit that ran but
failed a convergence check keeps its ranks (dropping them would bias SBC) and is counted as not
converged. Over 10% failed fits settle the verdict (the rest are skipped); ``max_cpu`` caps a
whole run, after which the tests use the ranks so far and the verdict says so.

The CLI and the reports live in ``zoo.sbc_report``; the ``[sbc]`` recipe table in
``zoo.sbc_catalogue``.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import threading
import time
import types
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyro
import torch

from . import tracing
from .errors import ZooError
from .registry import ModelSpec, get_model, load_dataset
from .sbc_result import ALPHA, APPROXIMATE, LOG_LIKELIHOOD, MAX_FAILED, SBCResult

EXACT = "exact"  # draws from spec.exact_posterior: checks the closed forms and the machinery
NUM_SIMULATIONS, NUM_DRAWS = 100, 32
FIT_TIMEOUT = 30.0  # CPU seconds per fit; a fit over it counts as failed (0: no limit)
# Per-method settings for zoo.fit, sized for a whole catalogue on two cores (see the recipe
# recipes/sbc_catalogue.toml, which repeats them); chees: num_chains = L, svi/laplace:
# num_samples = L unless set.
DEFAULTS: dict[str, dict[str, Any]] = {
    "chees": {"num_warmup": 150, "num_samples": 5},
    "nuts": {"num_chains": 1, "num_warmup": 100, "num_samples": 96, "max_tree_depth": 6,
             "jit": True},
    "svi": {"num_steps": 500, "lr": 0.2},
    "laplace": {"adam_steps": 200},
    EXACT: {},
}
RHAT_MAX = 1.05  # R-hat above this marks a fit not converged (see _posterior)
PosteriorFn = Callable[[dict, int, int], Mapping[str, Any]]  # (data, seed, L) -> site: (L, ...)


def rank(theta: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """#{draws < theta} per column, ties (discrete or point-mass posteriors) split at random."""
    less = (draws < theta[None]).sum(0)
    ties = (draws == theta[None]).sum(0)
    return less + rng.integers(0, ties + 1)


# -- simulation, fitting, thinning ----------------------------------------------------------
class FitTimeout(BaseException):
    """A fit used more CPU than ``fit_timeout``. A BaseException, so that the zoo's own
    best-effort ``except Exception`` fallbacks (tracing, JIT) cannot swallow it."""


@contextlib.contextmanager
def cpu_limit(seconds: float):
    """Raise FitTimeout once this process has used ``seconds`` more CPU (SIGPROF counts CPU,
    not wall time, so a busy machine does not time fits out). Main thread only; else no limit.
    Yields a record whose ``expired`` says whether the limit was hit, whatever exception the
    fit then raised (TorchScript turns an exception from a signal handler into a RuntimeError)."""
    clock = types.SimpleNamespace(expired=False)
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield clock
        return

    def expire(signum, frame):
        clock.expired = True
        raise FitTimeout(f"over the limit of {seconds:g} CPU-s per fit")

    old = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield clock
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


@contextlib.contextmanager
def pyro_stacks_restored():
    """Put Pyro's global handler and plate-dimension stacks back as they were, however the
    block ends. FitTimeout is raised from a signal handler, so it can land after a plate has
    pushed itself but before its ``with`` block owns it: nothing pops that plate, and every
    later fit in the process fails with 'at plates ... collide at dim=-1'."""
    from pyro.poutine.runtime import _DIM_ALLOCATOR, _PYRO_STACK  # no public reset exists

    handlers, dims = list(_PYRO_STACK), list(_DIM_ALLOCATOR._stack)
    try:
        yield
    finally:
        _PYRO_STACK[:] = handlers
        _DIM_ALLOCATOR._stack[:] = dims


def _cpu() -> float:
    """CPU seconds of this process, all threads (time.process_time costs ~0.1 ms in a VM)."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _label(site: str, idx: tuple[int, ...]) -> str:
    return site + (f"[{','.join(map(str, idx))}]" if idx else "")


def _flatten(site: str, values: np.ndarray, lead: int) -> dict[str, np.ndarray]:
    """site -> {label: (lead,) array} per scalar component, labelled like ArviZ (theta[3])."""
    shape = values.shape[lead:]
    return {_label(site, idx): values[(slice(None),) * lead + idx] for idx in np.ndindex(*shape)}


def method_settings(spec: ModelSpec, method: str, num_draws: int,
                    settings: Mapping[str, Any]) -> dict[str, Any]:
    """DEFAULTS overlaid with ``settings``, sized for L draws, validated like zoo.fit's."""
    from .inference import resolve_method, validate_settings

    if method == EXACT:
        if spec.exact_posterior is None:
            raise ZooError(f"model {spec.name!r} has no exact posterior, so method 'exact' does "
                           f"not apply; it supports {', '.join(spec.methods)}")
        if settings:
            raise ZooError(f"method 'exact' takes no settings, got {', '.join(settings)}")
        return {}
    method = resolve_method(method, spec)
    merged = {**DEFAULTS[method], **settings}
    if method == "chees":
        merged.setdefault("num_chains", num_draws)
    if method in APPROXIMATE:
        merged.setdefault("num_samples", num_draws)
    config = validate_settings(method, merged, where=f"sbc {method} settings")
    available = {"chees": config.num_chains if method == "chees" else 0,
                 "nuts": getattr(config, "num_chains", 0) * config.num_samples,
                 "svi": config.num_samples, "laplace": config.num_samples}[method]
    if available < num_draws:
        what = {"chees": "num_chains (one final draw per chain)",
                "nuts": "num_chains × num_samples"}.get(method, "num_samples")
        raise ZooError(f"sbc {method}: {what} = {available} gives fewer than num_draws = "
                       f"{num_draws} draws to rank among")
    return merged


def thin(fit, num_draws: int) -> dict[str, np.ndarray]:
    """L roughly independent draws per latent site, (L, *shape) (see the module docstring)."""
    out = {}
    for site, x in fit.posterior.items():  # latent and deterministic sites
        if fit.method == "chees":
            chains = np.linspace(0, x.shape[0] - 1, num_draws).round().astype(int)
            out[site] = x[chains, -1]
        else:
            flat = x.reshape((-1,) + x.shape[2:])
            if len(flat) < num_draws:
                raise ZooError(f"{fit.method} gave {len(flat)} draws, fewer than num_draws = "
                               f"{num_draws}" + (f" ({fit.info['fallback']})"
                                                 if "fallback" in fit.info else ""))
            step = len(flat) / num_draws if fit.method == "nuts" else 1
            out[site] = flat[(np.arange(num_draws) * step).astype(int)]
    return out


def _exact_draws(spec: ModelSpec, data: Mapping, seed: int, num_draws: int) -> dict[str, Any]:
    torch.manual_seed(seed)
    marginals = spec.exact_posterior(**data)
    return {k: d.sample((num_draws,)).cpu().numpy() for k, d in marginals.items()}


def log_likelihoods(spec: ModelSpec, data: Mapping[str, Any], observed: Sequence[str],
                    theta: Mapping[str, Any], draws: Mapping[str, Any]) -> np.ndarray:
    """log p(y | θ) summed over observations, at the truth θ (first) and at each of the L
    draws: (L + 1,). Latent sites the draws lack (assignments summed out) are summed out of
    the truth's likelihood too."""
    from .fit import default_dtype

    with default_dtype(torch.float64):
        points = {k: torch.cat([torch.as_tensor(v, dtype=torch.float64)[None],
                                torch.as_tensor(np.asarray(draws[k]), dtype=torch.float64)])
                  for k, v in theta.items() if k in draws}
        ll = tracing.evaluate(spec.fn, points, data, sites=list(observed), log_prob=True,
                              vectorize=spec.vectorizable)
    total = sum(v.reshape(v.shape[0], -1).sum(-1) for v in ll.values())
    return total.detach().cpu().numpy()


def proper_prior(spec: ModelSpec) -> bool:
    """Whether the model's prior is proper on its default data: SBC simulates from it."""
    from .fit import default_dtype
    from .registry import default_data

    with default_dtype(torch.float64):
        from .data import prepare

        data = prepare(spec, default_data(spec.name))
        return not tracing.improper_sites(tracing.structure(spec.fn, data))


def simulate(spec: ModelSpec, data: Mapping[str, Any], num_simulations: int, seed: int):
    """(covariates, site -> data key of each observation, prior draws site -> (N, ...)): the
    model run forward N times on the data's covariates, in float64."""
    from .data import prepare
    from .fit import default_dtype

    with default_dtype(torch.float64):
        prepared = prepare(spec, data)
        observed = tracing.observed_keys(spec.fn, prepared)
        covariates = {k: v for k, v in prepared.items() if k not in observed.values()}
        improper = tracing.improper_sites(tracing.structure(spec.fn, prepared))
        if improper:
            raise ZooError(f"model {spec.name!r} has a flat (improper) prior on {improper}: SBC "
                           "simulates data from the prior, so it needs a proper one")
        pyro.set_rng_seed(seed)
        draws = tracing.prior_draws(spec.fn, covariates, num_simulations,
                                    vectorize=spec.vectorizable)
        ref = tracing.get_trace(spec.fn, covariates)
    return covariates, observed, draws, ref


def sbc(model: str | ModelSpec, method: str | PosteriorFn, num_simulations: int = NUM_SIMULATIONS,
        seed: int = 0, dataset: str | None = None, dataset_args: Mapping | None = None,
        num_draws: int = NUM_DRAWS, args: Mapping | None = None, alpha: float = ALPHA,
        deterministic: bool = False, parameters: bool = True, fit_timeout: float = FIT_TIMEOUT,
        max_cpu: float = 0.0, progress: Callable[[int], None] | None = None,
        **settings) -> SBCResult:
    """Simulation-based calibration of ``model`` with ``method``: a zoo method name, "exact",
    or a function ``(data, seed, L) -> {site: (L, *shape) draws}`` (e.g. a deliberately wrong
    posterior, to see the test fail). Data sets: the model's default (or ``dataset``) with
    ``dataset_args`` supplies the covariates; ``args`` are model hyperparameters.
    ``deterministic`` ranks ``pyro.deterministic`` sites too. Besides the parameters, the
    log-likelihood of the simulated data is ranked (``log_likelihood``: log p(y_s | θ) at the
    truth among its values at the L draws; Modrák et al. 2023): it is sensitive to errors the
    marginal ranks miss and invariant under relabelling, so ``parameters=False`` ranks it alone,
    for models whose parameters are not identified (a network's weights under permutations and
    sign flips of its hidden units, which no chain crosses). A fit over ``fit_timeout``
    CPU-s fails; once more than 10% of N have failed the verdict cannot change, and the
    remaining simulations are skipped (status "skipped"); once the whole run has used
    ``max_cpu`` CPU-s (0: no limit) the rest are skipped too (status "budget") and the tests use
    the ranks so far."""
    start, cpu_start = time.perf_counter(), _cpu()
    spec = model if isinstance(model, ModelSpec) else get_model(model)
    for name, value, low in (("num_simulations", num_simulations, 2), ("num_draws", num_draws, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ZooError(f"sbc: {name} must be an integer >= {low}, got {value!r}")
    if not 0 < alpha < 1:
        raise ZooError(f"sbc: alpha must be in (0, 1), got {alpha!r}")
    for key, value in (("fit_timeout", fit_timeout), ("max_cpu", max_cpu)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ZooError(f"sbc: {key} must be a number of CPU seconds >= 0, got {value!r}")
    custom = callable(method)
    name = getattr(method, "__name__", "custom") if custom else str(method)
    if custom and settings:
        raise ZooError(f"sbc: settings {', '.join(settings)} apply to zoo methods, not to {name}")
    config = {} if custom else method_settings(spec, name, num_draws, settings)
    if not custom and name == "mcmc":
        from .inference import resolve_method

        name = resolve_method(name, spec)
    if dataset is None:  # the model's default data (a posteriordb model's first posterior)
        dataset, dataset_args = spec.default_dataset, dataset_args or spec.default_args
    if dataset is None:
        raise ZooError(f"model {spec.name!r} has no default data set: name one (dataset=...)")
    dataset_args, args = dict(dataset_args or {}), dict(args or {})
    covariates, observed, prior, ref = simulate(
        spec, {**load_dataset(dataset, **dataset_args), **args}, num_simulations, seed)
    notes: list[str] = []
    latent = [n for n in tracing.latent_sites(ref) if n not in observed]  # y is sampled in ref
    sites = (latent if parameters else []) + (
        tracing.deterministic_sites(ref) if deterministic else [])
    truth: dict[str, np.ndarray] = {}
    for site in sites:
        truth.update(_flatten(site, prior[site].cpu().numpy(), 1))
    fixed = [k for k, v in truth.items() if np.ptp(v) == 0]  # e.g. a Cholesky factor's zeros
    if fixed:
        notes.append(f"not ranked (the same in every prior draw): {', '.join(fixed)}")
        truth = {k: v for k, v in truth.items() if k not in fixed}
    if not parameters:
        notes.append("parameters not ranked (not identified): only the log-likelihood")
    labels = list(truth) + [LOG_LIKELIHOOD]
    rng = np.random.default_rng([seed, 1])
    ranks = np.full((num_simulations, len(labels)), np.nan)
    rows = []
    for s in range(num_simulations):
        fit_seed = int(np.random.SeedSequence([seed, s]).generate_state(1)[0] % 2**31)
        data = {**covariates, **{key: prior[site][s] for site, key in observed.items()}}
        row = {"simulation": s, "status": "ok", "error": "", "converged": np.nan,
               "failed_checks": "", "min_ess": np.nan, "seed": fit_seed}
        t0, cpu0 = time.perf_counter(), _cpu()
        if sum(r["status"] in ("error", "timeout") for r in rows) > MAX_FAILED * num_simulations:
            row["status"] = "skipped"  # the verdict is settled: FAIL (fits failed)
        elif max_cpu and cpu0 - cpu_start > max_cpu:
            row["status"] = "budget"
        if row["status"] != "ok":
            rows.append({**row, "time_s": 0.0, "cpu_s": 0.0})
            continue
        try:
            with warnings.catch_warnings(), pyro_stacks_restored(), \
                    cpu_limit(fit_timeout) as clock:
                warnings.simplefilter("ignore")  # recorded in the row instead
                draws = _posterior(spec, name, method if custom else None, data, fit_seed,
                                   num_draws, config, row)
            got = {}
            for site in sites:
                if site in draws:
                    got.update(_flatten(site, np.asarray(draws[site], dtype=float), 1))
            for j, (label, value) in enumerate(truth.items()):
                if label in got:
                    ranks[s, j] = rank(np.asarray(value[s])[None], got[label][:, None], rng)[0]
            ll = log_likelihoods(spec, data, list(observed), {k: prior[k][s] for k in latent},
                                 draws)
            ranks[s, -1] = rank(ll[:1], ll[1:, None], rng)[0]
        except (KeyboardInterrupt, SystemExit):
            raise
        except (Exception, FitTimeout) as e:  # counted and reported, never silently dropped
            # SIGPROF inside TorchScript (JIT-traced potentials) comes out as a RuntimeError,
            # so a fit that failed once its CPU limit expired is a timeout whatever was raised.
            row["status"] = "timeout" if clock.expired else "error"
            row["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        row["time_s"], row["cpu_s"] = time.perf_counter() - t0, _cpu() - cpu0
        rows.append(row)
        if progress:
            progress(s)
    table = pd.DataFrame(ranks, columns=labels)
    missing = [c for c in table.columns if table[c].isna().all()]
    if missing and any(r["status"] == "ok" for r in rows):  # e.g. a site the method omits
        notes.append(f"not ranked (absent from every posterior): {', '.join(missing)}")
        table = table.drop(columns=missing)
    from .inference import versions

    return SBCResult(spec.name, name, num_draws, seed, table, pd.DataFrame(rows), config, dataset,
                     dataset_args, args, alpha, notes,
                     {"versions": versions(), "time_s": time.perf_counter() - start,
                      "cpu_s": _cpu() - cpu_start})


def _posterior(spec: ModelSpec, name: str, fn: PosteriorFn | None, data: dict, seed: int,
               num_draws: int, config: Mapping, row: dict) -> Mapping[str, Any]:
    """The L draws of one simulation; fills ``row``'s convergence columns for zoo methods."""
    if fn is not None:
        return fn(data, seed, num_draws)
    if name == EXACT:
        from .fit import default_dtype

        with default_dtype(torch.float64):
            return _exact_draws(spec, data, seed, num_draws)
    from .inference import fit as zoo_fit

    fit = zoo_fit(spec, data, name, seed=seed, **config)
    checks = fit.checks()
    # The zoo's checks, adapted to short SBC runs: its ESS thresholds are for precise posterior
    # means, while SBC needs L independent draws (chees: final draws of independent chains;
    # NUTS: bulk ESS >= L); and R-hat of chains this short scatters by ~0.01 when they mix
    # well, so SBC flags R-hat (nested for chees) above RHAT_MAX, not 1.01.
    rhat, value = checks["check"].isin(["max R-hat", "max nested R-hat"]), checks["value"]
    fine = (value.astype(float) < RHAT_MAX) | (fit.num_chains == 1)  # 1 chain: R-hat is NaN
    failed = checks[~checks["passed"].astype(bool) & checks["kind"].eq("convergence")
                    & ~checks["check"].str.contains("ESS") & ~(rhat & fine)]
    names = list(failed["check"])
    ess = checks.loc[checks["check"] == "min bulk ESS", "value"]
    if fit.method == "nuts" and len(ess):
        row["min_ess"] = float(ess.iloc[0])
        if row["min_ess"] < num_draws:
            names.append("min bulk ESS < num_draws")
    if fit.method != name:
        names.append(f"ran {fit.method}")  # chees fell back to NUTS (fit.info["fallback"])
    row["converged"], row["failed_checks"] = not names, "; ".join(names)
    return thin(fit, num_draws)


def main(argv: Sequence[str]) -> int:
    """``python -m zoo.run sbc --model NAME --method M ...`` (see zoo.sbc_report)."""
    from .sbc_report import main as report_main

    return report_main(argv)


def run(path, raw: Mapping, args, command: str) -> int:
    """A recipe with an ``[sbc]`` table (see zoo.sbc_report)."""
    from .sbc_report import run_recipe

    return run_recipe(path, raw, args, command)
