"""What several walk-throughs need: an MCMC fit from the recipe's settings, its comparison with
the exact posterior, its checks in words, and posterior predictive p-values."""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np
import pandas as pd

from ..errors import ConvergenceWarning, ZooError
from .document import fmt

MCMC = ("chees", "nuts")


def validate_inference(s: Mapping[str, Any], where: str, method: str = "method",
                       settings: str = "inference") -> None:
    """``s[method]`` is an MCMC method and ``s[settings]`` are valid settings for it."""
    from ..inference.settings import validate_settings

    if s[method] not in MCMC:
        raise ZooError(f"{where}: teach.{method} must be one of {', '.join(MCMC)}, got {s[method]!r}")
    validate_settings(s[method], s[settings], where=f"{where}: teach.{settings}")


def mcmc_fit(model: str, data: Mapping[str, Any], s: Mapping[str, Any], seed: int,
             method: str = "method", settings: str = "inference"):
    """``zoo.fit`` with the walk-through's method and settings. Failed checks stay on
    ``fit.warnings`` (the report states them, see ``checks_text``) instead of on stderr."""
    import zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return zoo.fit(model, data, method=s[method], seed=seed, **s[settings])


def fit_table(fit) -> pd.DataFrame:
    """Posterior mean and sd per parameter, the fit's against the exact ones, with the MCSE
    and z = (mean − exact mean) / MCSE."""
    from ..diagnostics import compare_exact

    table = compare_exact(fit)
    return table.rename(columns={"mcse_mean": "MCSE of mean", "exact_mean": "exact mean",
                                 "exact_sd": "exact sd"})


def checks_text(fit, who: str = "the fit") -> str:
    """One sentence: did ``who`` pass the zoo's convergence checks, and which failed."""
    checks = fit.checks()
    conv = checks[checks["kind"] == "convergence"]
    failed = conv[~conv["passed"].astype(bool)]
    if failed.empty:
        names = ", ".join(f"{r.check} = {fmt(r.value, 3)}" for r in conv.itertuples())
        return f"All of the zoo's convergence checks passed for {who} ({names})."
    names = "; ".join(f"{r.check} = {fmt(r.value, 3)} (wanted {r.threshold})"
                      for r in failed.itertuples())
    return f"**The zoo's convergence checks failed for {who}**: {names}."


def ppc_pvalue(replicates: np.ndarray, observed: float) -> float:
    """Posterior predictive p-value P(T(y_rep) >= T(y)), ties counted half (discrete T)."""
    r = np.asarray(replicates, dtype=float)
    return float(np.mean(r > observed) + 0.5 * np.mean(r == observed))
