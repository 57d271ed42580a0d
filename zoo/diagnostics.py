"""The one place that talks to ArviZ: Fit → InferenceData, summaries, checks, comparisons.

InferenceData is built with ``az.from_dict`` (not ``from_pyro``, which ArviZ 1.x dropped), so
this module works with ArviZ 0.23 on Python 3.11 and 1.x on newer Pythons. Checks follow
posteriordb's ``checks_made`` and Vehtari et al. (2021): R-hat < 1.01, bulk and tail ESS of at
least 100 per chain (for at most 4 chains: 400 in all), no divergences, E-BFMI ≥ 0.3, Pareto
k̂ < 0.7 for PSIS-LOO. Many short chains (chees) are judged by nested R-hat < 1.01 (Margossian
et al. 2024) instead: classic R-hat demands that every short chain mix on its own, which
128 chains of 100 draws need not do to give a good pooled sample.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np
import pandas as pd

from .inference.convergence import columns, ess_bulk, ess_tail, rhat
from .registry import MCMC_METHODS

if TYPE_CHECKING:
    import arviz

    from .fit import Fit


@functools.cache
def load_arviz():
    """ArviZ, imported on first use: it takes ~2 s, and a fit's own checks do without it."""
    with warnings.catch_warnings():  # ArviZ announces its 1.0 refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    # One chain of iid draws (SVI, Laplace) is legitimate; ArviZ's shape warning would be noise.
    # ArviZ 0.23 logs through its own Logger instance (az._log), not logging.getLogger("arviz").
    getattr(az, "_log", logging.getLogger("arviz")).setLevel(logging.ERROR)
    return az

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
ESS_CHAINS_MAX = 4  # ESS target: 100 per chain up to 4 chains (400), not 12,800 for 128 chains
BFMI_MIN = 0.3
PARETO_K_MAX = 0.7


def to_inference_data(fit: "Fit", prior_samples: int = 500) -> arviz.InferenceData:
    observed = {site: fit.data[key] for site, key in fit.observed.items() if key in fit.data}
    prior = fit.prior(prior_samples)
    sample_stats = dict(fit.sample_stats)
    return _from_dict(
        posterior=fit.posterior,
        sample_stats=sample_stats or None,
        log_likelihood=fit.log_likelihood(),
        posterior_predictive=fit.posterior_predictive(),
        observed_data={k: np.asarray(v) for k, v in observed.items()},
        prior={k: v for k, v in prior.items() if k not in fit.observed},
        prior_predictive={k: v for k, v in prior.items() if k in fit.observed},
        attrs={"model": fit.model, "method": fit.method, "inference_library": "pyro"},
    )


def _from_dict(**groups) -> arviz.InferenceData:
    with _many_chains_ok():
        return load_arviz().from_dict(**groups)


@contextlib.contextmanager
def _many_chains_ok() -> Iterator[None]:
    """128 chains of 100 draws (chees) are legitimate; ArviZ suspects swapped axes and warns."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"More chains \(\d+\) than draws",
                                category=UserWarning)
        yield


def _posterior_only(fit: "Fit") -> arviz.InferenceData:
    return _from_dict(posterior=fit.posterior)


def summary(fit: "Fit", hdi_prob: float = 0.94, **kwargs) -> pd.DataFrame:
    """ArviZ's summary of the posterior: mean, sd, hdi, mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant draws (e.g. MAP) have no ESS
        return load_arviz().summary(_posterior_only(fit), hdi_prob=hdi_prob, **kwargs)


def _loo_check(fit: "Fit") -> dict | None:
    if all(np.ptp(v) == 0 for v in fit.posterior.values()):
        return None  # a point estimate (MAP) has no spread for PSIS to weight
    log_likelihood = fit.log_likelihood()
    if not log_likelihood:
        return None  # a likelihood written as pyro.factor has no pointwise terms
    idata = _from_dict(posterior=fit.posterior, log_likelihood=log_likelihood)
    ks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for site in log_likelihood:  # each observed site's own PSIS-LOO (an HMM's u and v)
            loo = load_arviz().loo(idata, pointwise=True, var_name=site)
            if loo.pareto_k is not None:
                ks.append(float(np.nanmax(np.asarray(loo.pareto_k))))
    k = max(ks, default=float("nan"))
    return {"check": "max Pareto k (PSIS-LOO)", "value": k, "threshold": f"< {PARETO_K_MAX}",
            "passed": bool(k < PARETO_K_MAX), "kind": "loo"}


def checks(fit: "Fit", loo: bool = True) -> pd.DataFrame:
    """Pass/fail checks. ``kind`` is "convergence" (the fit can be trusted as a posterior
    sample), "loo" (PSIS-LOO is reliable) or "info" (reported, decides nothing);
    ``Fit.converged`` uses the first. ``loo=False`` leaves out PSIS-LOO (it needs the pointwise
    log-likelihood at every draw), as ``zoo.fit`` does for the warnings it attaches."""
    rows = []
    key = "checks" if loo else "convergence_checks"
    if key in fit._cache:
        return fit._cache[key]
    if fit.method in MCMC_METHODS:
        rows += _mcmc_checks(fit)
    elif fit.method == "svi":
        rows.append({"check": "ELBO converged", "value": fit.info["num_steps_run"],
                     "threshold": f"relative change < {fit.settings['tol']}",
                     "passed": not any("the ELBO" in w for w in fit.warnings)})
    elif fit.method == "laplace":
        g = fit.info["gradient_norm_at_mode"]
        rows += [
            {"check": "Hessian positive definite", "value": fit.info["dim"], "threshold": "all eigenvalues > 0",
             "passed": True},  # otherwise the fit raised NotPositiveDefiniteError
            {"check": "gradient norm at mode", "value": g, "threshold": "stationary",
             "passed": not any("stationary" in w for w in fit.warnings)},
        ]
    for r in rows:
        r.setdefault("kind", "convergence")
    loo_row = _loo_check(fit) if loo else None
    if loo_row is not None:
        rows.append(loo_row)
    table = pd.DataFrame(rows, columns=["check", "value", "threshold", "passed", "kind"])
    fit._cache[key] = table
    return table


def _mcmc_checks(fit: "Fit") -> list[dict]:
    # ArviZ's estimators, vectorised over every scalar coordinate (zoo.inference.convergence)
    x = np.concatenate([columns(np.asarray(fit.posterior[n], dtype=float))
                        for n in fit.latent_names], axis=-1)
    r_hat, bulk, tail = (_nanmax(rhat(x)), _nanmin(ess_bulk(x)), _nanmin(ess_tail(x)))
    n_min = ESS_PER_CHAIN * min(fit.num_chains, ESS_CHAINS_MAX)
    superchains = fit.info.get("num_superchains", 1)
    rhat_row = {"check": "max R-hat", "value": r_hat, "threshold": f"< {RHAT_MAX}",
                "passed": bool(r_hat < RHAT_MAX)}
    rows = []
    if 1 < superchains < fit.num_chains:
        nested = max(nested_rhat(v, superchains) for _, v in _all_elements(fit))
        rows.append({"check": "max nested R-hat", "value": nested, "threshold": f"< {RHAT_MAX}",
                     "passed": bool(nested < RHAT_MAX)})
        rhat_row["kind"] = "info"  # reported; nested R-hat decides for many short chains
    rows += [
        rhat_row,
        {"check": "min bulk ESS", "value": bulk, "threshold": f">= {n_min}",
         "passed": bool(bulk >= n_min)},
        {"check": "min tail ESS", "value": tail, "threshold": f">= {n_min}",
         "passed": bool(tail >= n_min)},
        {"check": "divergences", "value": int(fit.sample_stats["diverging"].sum()),
         "threshold": "= 0", "passed": not fit.sample_stats["diverging"].any()},
    ]
    energy = fit.sample_stats.get("energy")
    if energy is not None and energy.shape[1] > 2:
        bfmi = pooled_bfmi(energy) if superchains > 1 else _min_bfmi(energy)
        rows.append({"check": "min E-BFMI" if superchains == 1 else "pooled E-BFMI", "value": bfmi,
                     "threshold": f">= {BFMI_MIN}", "passed": bool(bfmi >= BFMI_MIN)})
    depth = fit.sample_stats.get("tree_depth")
    if depth is not None:
        frac = float((depth >= fit.settings["max_tree_depth"]).mean())
        rows.append({"check": "max tree depth hit", "value": frac, "threshold": "= 0",
                     "passed": frac == 0})
    if "max_leapfrog" in fit.settings and "n_steps" in fit.sample_stats:
        frac = float((fit.sample_stats["n_steps"] >= fit.settings["max_leapfrog"]).mean())
        rows.append({"check": "max_leapfrog hit", "value": frac, "threshold": "= 0",
                     "passed": frac == 0})
    return rows


def _nanmax(v: np.ndarray) -> float:
    """As pandas' max over a summary column: NaN entries skipped, NaN if all are."""
    return float(np.nanmax(v)) if np.isfinite(v).any() else float("nan")


def _nanmin(v: np.ndarray) -> float:
    return float(np.nanmin(v)) if np.isfinite(v).any() else float("nan")


def _min_bfmi(energy: np.ndarray) -> float:
    with _many_chains_ok():
        return float(np.min(load_arviz().bfmi(energy)))


def nested_rhat(values: np.ndarray, num_superchains: int) -> float:
    """Nested R-hat (Margossian et al. 2024, eq. 17-19) of a (chain, draw) array whose chains
    come in ``num_superchains`` consecutive, equal groups that each started from one point.

    nR̂ = sqrt(1 + B̂ / Ŵ): B̂ the variance of the superchain means, Ŵ the mean over
    superchains of (the variance of its chain means + its mean within-chain variance)."""
    c, n = values.shape
    x = values.reshape(num_superchains, c // num_superchains, n)
    chain_mean = x.mean(-1)
    super_mean = chain_mean.mean(-1)
    between_super = super_mean.var(ddof=1)
    between_chain = chain_mean.var(-1, ddof=1) if x.shape[1] > 1 else 0.0
    within_chain = x.var(-1, ddof=1).mean(-1) if n > 1 else 0.0
    within = np.mean(between_chain + within_chain)
    return float(np.sqrt(1 + between_super / within)) if within > 0 else float("nan")


def pooled_bfmi(energy: np.ndarray) -> float:
    """E-BFMI over all chains at once: Σ (E_t − E_t−1)² / Σ (E_t − Ē_chain)². Per chain, 100
    draws make each estimate too noisy for a minimum over 128 chains to mean anything."""
    num = np.sum(np.diff(energy, axis=1) ** 2)
    den = np.sum((energy - energy.mean(axis=1, keepdims=True)) ** 2)
    return float(num / den)


def _all_elements(fit: "Fit"):
    for name in fit.latent_names:
        yield from _elements(name, fit.posterior[name])


def failed_checks(fit: "Fit") -> list[str]:
    """One line per failed convergence check, for ``Fit.warnings`` (PSIS-LOO's Pareto k̂ is
    reported by ``checks`` when asked: it needs the pointwise log-likelihood at every draw)."""
    t = checks(fit, loo=False)
    return [f"check failed: {r.check} = {r.value:.4g} (want {r.threshold})"
            for r in t.itertuples() if not r.passed and r.kind != "info"]


def _elements(name: str, values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Split (chain, draw, *shape) into scalar parameters named like ArviZ: ``theta[3]``."""
    shape = values.shape[2:]
    if not shape:
        return [(name, values)]
    return [(f"{name}[{','.join(map(str, idx))}]", values[(slice(None), slice(None)) + idx])
            for idx in np.ndindex(*shape)]


def _mcse_mean(values: np.ndarray) -> float:
    if values.ndim != 2:
        return float("nan")
    with _many_chains_ok():
        return float(load_arviz().mcse(values, method="mean"))


def compare_exact(fit: "Fit") -> pd.DataFrame | None:
    """Posterior mean/sd per parameter vs the model's exact posterior, with z = Δmean / MCSE."""
    if fit.spec.exact_posterior is None:
        return None
    from .fit import default_dtype

    rows = []
    with default_dtype(fit.dtype):
        exact = fit.spec.exact_posterior(**fit.data)
        moments = {k: (d.mean.detach().cpu().numpy(), d.stddev.detach().cpu().numpy())
                   for k, d in exact.items()}
    for site, (mean, sd) in moments.items():
        if site not in fit.posterior:
            continue
        for (label, draws), m, s in zip(_elements(site, fit.posterior[site]),
                                        np.ravel(mean), np.ravel(sd)):
            mcse = _mcse_mean(draws)
            rows.append({"param": label, "mean": draws.mean(), "exact_mean": m, "sd": draws.std(ddof=1),
                         "exact_sd": s, "mcse_mean": mcse, "z": (draws.mean() - m) / mcse})
    return pd.DataFrame(rows)


def compare_reference(fit: "Fit", reference: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Our draws vs reference draws (e.g. posteriordb): z uses the combined MCSE of both."""
    rows = []
    for site, ref in reference.items():
        if site not in fit.posterior:
            continue
        ours, theirs = _elements(site, fit.posterior[site]), _elements(site, np.asarray(ref))
        for (label, a), (_, b) in zip(ours, theirs):
            mcse = np.hypot(_mcse_mean(a), _mcse_mean(b))
            sd_a, sd_b = a.std(ddof=1), b.std(ddof=1)
            rows.append({"param": label, "mean": a.mean(), "reference_mean": b.mean(), "sd": sd_a,
                         "reference_sd": sd_b, "mcse_mean": mcse, "z": (a.mean() - b.mean()) / mcse,
                         "sd_ratio": sd_a / sd_b})
    return pd.DataFrame(rows)


# -- small ArviZ wrappers used by zoo.evidence ---------------------------------------------

def ess(values: np.ndarray) -> float:
    """Bulk ESS of a (chain, draw) array (ArviZ's rank-normalised multi-chain estimate)."""
    with _many_chains_ok():
        return float(load_arviz().ess(np.asarray(values, dtype=float)))


def max_rhat(values: np.ndarray) -> float:
    """Largest R-hat over the coordinates of a (chain, draw, d) array."""
    values = np.asarray(values, dtype=float)
    if values.shape[0] < 2:
        return float("nan")
    with _many_chains_ok():
        return float(max(load_arviz().rhat(values[..., i]) for i in range(values.shape[-1])))


def pareto_k(log_weights: np.ndarray) -> float:
    """PSIS Pareto k̂ of importance log-weights (Vehtari et al. 2024)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, k = load_arviz().psislw(np.asarray(log_weights, dtype=float))
    return float(k)
