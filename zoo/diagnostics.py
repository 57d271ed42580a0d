"""The one place that talks to ArviZ: Fit → InferenceData, summaries, checks, comparisons.

InferenceData is built with ``az.from_dict`` (not ``from_pyro``, which ArviZ 1.x dropped), so
this module works with ArviZ 0.23 on Python 3.11 and 1.x on newer Pythons. Checks follow
posteriordb's ``checks_made`` and Vehtari et al. (2021): R-hat < 1.01, bulk and tail ESS of at
least 100 per chain, no divergences, E-BFMI ≥ 0.3, Pareto k̂ < 0.7 for PSIS-LOO.
"""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd

with warnings.catch_warnings():  # ArviZ announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

# One chain of iid draws (SVI, Laplace) is legitimate; ArviZ's shape warning would be noise.
# ArviZ 0.23 logs through its own Logger instance (az._log), not logging.getLogger("arviz").
getattr(az, "_log", logging.getLogger("arviz")).setLevel(logging.ERROR)

if TYPE_CHECKING:
    from .fit import Fit

RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
BFMI_MIN = 0.3
PARETO_K_MAX = 0.7


def to_inference_data(fit: "Fit", prior_samples: int = 500) -> az.InferenceData:
    observed = {site: fit.data[key] for site, key in fit.observed.items() if key in fit.data}
    prior = fit.prior(prior_samples)
    sample_stats = dict(fit.sample_stats)
    return az.from_dict(
        posterior=fit.posterior,
        sample_stats=sample_stats or None,
        log_likelihood=fit.log_likelihood(),
        posterior_predictive=fit.posterior_predictive(),
        observed_data={k: np.asarray(v) for k, v in observed.items()},
        prior={k: v for k, v in prior.items() if k not in fit.observed},
        prior_predictive={k: v for k, v in prior.items() if k in fit.observed},
        attrs={"model": fit.model, "method": fit.method, "inference_library": "pyro"},
    )


def _posterior_only(fit: "Fit") -> az.InferenceData:
    return az.from_dict(posterior=fit.posterior)


def summary(fit: "Fit", hdi_prob: float = 0.94, **kwargs) -> pd.DataFrame:
    """az.summary of the posterior: mean, sd, hdi, mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant draws (e.g. MAP) have no ESS
        return az.summary(_posterior_only(fit), hdi_prob=hdi_prob, **kwargs)


def _loo_check(fit: "Fit") -> dict | None:
    if all(np.ptp(v) == 0 for v in fit.posterior.values()):
        return None  # a point estimate (MAP) has no spread for PSIS to weight
    idata = az.from_dict(posterior=fit.posterior, log_likelihood=fit.log_likelihood())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(idata, pointwise=True)
    k = float(np.nanmax(np.asarray(loo.pareto_k))) if loo.pareto_k is not None else float("nan")
    return {"check": "max Pareto k (PSIS-LOO)", "value": k, "threshold": f"< {PARETO_K_MAX}",
            "passed": bool(k < PARETO_K_MAX), "kind": "loo"}


def checks(fit: "Fit") -> pd.DataFrame:
    """Pass/fail checks. ``kind`` is "convergence" (the fit can be trusted as a posterior
    sample) or "loo" (PSIS-LOO is reliable); ``Fit.converged`` uses the former."""
    rows = []
    if "checks" in fit._cache:
        return fit._cache["checks"]
    if fit.method == "nuts":
        s = summary(fit, round_to="none")
        n_min = ESS_PER_CHAIN * fit.num_chains
        rows += [
            {"check": "max R-hat", "value": float(s["r_hat"].max()), "threshold": f"< {RHAT_MAX}",
             "passed": bool(s["r_hat"].max() < RHAT_MAX)},
            {"check": "min bulk ESS", "value": float(s["ess_bulk"].min()), "threshold": f">= {n_min}",
             "passed": bool(s["ess_bulk"].min() >= n_min)},
            {"check": "min tail ESS", "value": float(s["ess_tail"].min()), "threshold": f">= {n_min}",
             "passed": bool(s["ess_tail"].min() >= n_min)},
            {"check": "divergences", "value": int(fit.sample_stats["diverging"].sum()),
             "threshold": "= 0", "passed": not fit.sample_stats["diverging"].any()},
        ]
        energy = fit.sample_stats.get("energy")
        if energy is not None and energy.shape[1] > 2:
            bfmi = float(np.min(az.bfmi(energy)))
            rows.append({"check": "min E-BFMI", "value": bfmi, "threshold": f">= {BFMI_MIN}",
                         "passed": bool(bfmi >= BFMI_MIN)})
        depth = fit.sample_stats.get("tree_depth")
        if depth is not None:
            frac = float((depth >= fit.settings["max_tree_depth"]).mean())
            rows.append({"check": "max tree depth hit", "value": frac, "threshold": "= 0",
                         "passed": frac == 0})
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
    loo = _loo_check(fit)
    if loo is not None:
        rows.append(loo)
    table = pd.DataFrame(rows, columns=["check", "value", "threshold", "passed", "kind"])
    fit._cache["checks"] = table
    return table


def failed_checks(fit: "Fit") -> list[str]:
    """One line per failed check, for ``Fit.warnings``."""
    t = checks(fit)
    return [f"check failed: {r.check} = {r.value:.4g} (want {r.threshold})"
            for r in t.itertuples() if not r.passed]


def _elements(name: str, values: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Split (chain, draw, *shape) into scalar parameters named like ArviZ: ``theta[3]``."""
    shape = values.shape[2:]
    if not shape:
        return [(name, values)]
    return [(f"{name}[{','.join(map(str, idx))}]", values[(slice(None), slice(None)) + idx])
            for idx in np.ndindex(*shape)]


def _mcse_mean(values: np.ndarray) -> float:
    return float(az.mcse(values, method="mean")) if values.ndim == 2 else float("nan")


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
    return float(az.ess(np.asarray(values, dtype=float)))


def max_rhat(values: np.ndarray) -> float:
    """Largest R-hat over the coordinates of a (chain, draw, d) array."""
    values = np.asarray(values, dtype=float)
    if values.shape[0] < 2:
        return float("nan")
    return float(max(az.rhat(values[..., i]) for i in range(values.shape[-1])))


def pareto_k(log_weights: np.ndarray) -> float:
    """PSIS Pareto k̂ of importance log-weights (Vehtari et al. 2024)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, k = az.psislw(np.asarray(log_weights, dtype=float))
    return float(k)
