"""Model comparison: Bayes factors from the evidence, or PSIS-LOO through ArviZ.

    zoo.compare({"pooled": fit_a, "separate": fit_b})              # by the evidence
    zoo.compare({"pooled": fit_a, "separate": fit_b}, by="loo")    # by PSIS-LOO (az.compare)

The two answer different questions. The evidence p(y | M) is the *prior* predictive density of
the data: it rewards a model whose prior put mass where the data are, so it penalises vague
priors and unused parameters (the Occam factor). LOO estimates the *posterior* predictive
density of a new observation: the prior matters only through the posterior. They can disagree,
and both answers are informative.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import pandas as pd

from .errors import ConvergenceWarning, ZooError, unknown
from .evidence import ESTIMATORS, Evidence

if TYPE_CHECKING:
    from .fit import Fit

# Kass & Raftery (1995), table in section 3.2: BF of the better model against the other.
KASS_RAFTERY = ((3.2, "not worth more than a bare mention"), (10.0, "substantial"),
                (100.0, "strong"), (math.inf, "decisive"))
# Most accurate first: a closed form, then bridge sampling (MCMC draws, consistent), then
# importance sampling (exact in the limit but fragile in the tails), then Laplace (O(1/n) bias).
PREFERENCE = (("exact", None), ("bridge", "chees"), ("bridge", "nuts"), ("importance", "laplace"),
              ("importance", "svi"), ("laplace", "laplace"))
PRIOR_TOLERANCE = 1e-6


def bayes_factor(a: Evidence, b: Evidence) -> tuple[float, float]:
    """log BF_ab = log Z_a − log Z_b and its MCSE (independent estimates: variances add)."""
    return a.value - b.value, math.sqrt(a.mcse**2 + b.mcse**2)


def kass_raftery(log_bf: float) -> str:
    """Kass–Raftery's words for a Bayes factor, given as its natural log; the sign only says
    which model is favoured, so log BF and −log BF get the same words."""
    bf = round(math.exp(abs(log_bf)), 9)  # exp(log 100) is 100.00000000000004
    for upper, words in KASS_RAFTERY:
        if bf < upper or (upper == 100.0 and bf == 100.0):  # their "10 to 100" includes 100
            return words
    return KASS_RAFTERY[-1][1]


def _labelled(fits: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    if isinstance(fits, Mapping):
        out = dict(fits)
    else:
        out = {}
        for f in fits:
            if not hasattr(f, "model"):
                raise ZooError("compare: a list of fits is labelled by model name; pass a dict "
                               "label -> Fit (or Evidence) instead")
            if f.model in out:
                raise ZooError(f"compare: model {f.model!r} appears twice; pass a dict with a "
                               "distinct label for each fit")
            out[f.model] = f
    if not out:
        raise ZooError("compare: no fits given")
    return out


def check_prior(prior: Mapping[str, float] | None, labels: Sequence[str]) -> dict[str, float]:
    """Prior model probabilities: uniform when None, else positive, one per label, summing to 1."""
    if prior is None:
        return {label: 1.0 / len(labels) for label in labels}
    missing, extra = set(labels) - set(prior), set(prior) - set(labels)
    if missing or extra:
        raise ZooError(f"prior over models: labels {sorted(prior)} must be exactly the models "
                       f"compared, {list(labels)}"
                       + (f"; missing {sorted(missing)}" if missing else "")
                       + (f"; unknown {sorted(extra)}" if extra else ""))
    for label, p in prior.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (p > 0 and math.isfinite(p)):
            raise ZooError(f"prior over models: P({label}) must be a positive number, got {p!r}")
    total = float(sum(prior.values()))
    if abs(total - 1.0) > PRIOR_TOLERANCE:
        raise ZooError(f"prior over models must sum to 1, got {total:.6g}")
    return {label: float(prior[label]) for label in labels}


def _evidence_of(item: Any, estimator: str | None) -> Evidence:
    if isinstance(item, Evidence):
        return item
    with warnings.catch_warnings():  # the Evidence keeps its warnings; show them once, there
        warnings.simplefilter("ignore", ConvergenceWarning)
        return item.log_evidence(estimator)


def compare(fits: Mapping[str, Any] | Sequence[Any], by: str = "evidence",
            estimator: str | None = None, prior: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Compare models, best first.

    ``fits``: dict label -> Fit (or, for ``by="evidence"``, a precomputed ``Evidence``), or a
    list of fits labelled by model name. ``by="evidence"``: log evidence ± MCSE (``estimator``:
    each fit's default when None), log BF against the best model ± MCSE, prior and posterior
    model probabilities, and Kass–Raftery's words for BF(best : model). ``by="loo"``: ArviZ's
    ``az.compare`` (elpd_loo, p_loo, elpd_diff, weight, se, dse, warning)."""
    fits = _labelled(fits)
    if by == "loo":
        if estimator is not None or prior is not None:
            raise ZooError("compare(by='loo') takes no estimator or prior (stacking weights are "
                           "not posterior model probabilities)")
        if any(isinstance(f, Evidence) for f in fits.values()):
            raise ZooError("compare(by='loo') needs fits, not Evidence values")
        return loo_compare({label: f.to_inference_data() for label, f in fits.items()})
    if by != "evidence":
        raise unknown("comparison", by, ("evidence", "loo"))
    if estimator is not None and estimator not in ESTIMATORS:
        raise unknown("evidence method", estimator, ESTIMATORS)
    labels = list(fits)
    prior_p = check_prior(prior, labels)  # before any (possibly slow) estimate
    ev = {label: _evidence_of(fits[label], estimator) for label in labels}
    best = max(labels, key=lambda label: ev[label].value)
    log_bf = {label: bayes_factor(ev[label], ev[best]) for label in labels}
    log_post = np.array([ev[label].value + math.log(prior_p[label]) for label in labels])
    post = np.exp(log_post - log_post.max())
    post /= post.sum()
    table = pd.DataFrame({
        "log_evidence": [ev[label].value for label in labels],
        "mcse": [ev[label].mcse for label in labels],
        "estimator": [ev[label].method for label in labels],
        "log_bf_vs_best": [log_bf[label][0] for label in labels],
        "log_bf_mcse": [log_bf[label][1] for label in labels],
        "prior_prob": [prior_p[label] for label in labels],
        "posterior_prob": post,
        "evidence_against": ["(best)" if label == best else kass_raftery(log_bf[label][0])
                             for label in labels],
        "warnings": ["; ".join(ev[label].warnings) for label in labels],
    }, index=pd.Index(labels, name="model"))
    return table.sort_values("log_evidence", ascending=False, kind="stable")


def loo_compare(idatas: Mapping[str, Any]) -> pd.DataFrame:
    """``az.compare`` by PSIS-LOO with stacking weights; ArviZ is reached through
    zoo.diagnostics, the one module that imports it."""
    from .diagnostics import load_arviz

    with warnings.catch_warnings():  # k̂ warnings are in the table's ``warning`` column
        warnings.simplefilter("ignore", UserWarning)
        return load_arviz().compare(dict(idatas), ic="loo", method="stacking")


# -- every requested estimator on the fits it applies to (used by zoo.run) -------------------
@dataclass
class EvidenceRow:
    """One estimator on one model's fit: the estimate, or why there is none."""

    model: str  # the recipe's label
    estimator: str
    fit: str  # the method of the fit it used
    evidence: Evidence | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.estimator} ({self.fit})" if self.estimator == "importance" else self.estimator


_SOURCES = {"exact": ("any",), "bridge": ("chees", "nuts"), "importance": ("svi", "laplace"),
            "laplace": ("laplace",)}


def estimate_all(label: str, fits: Mapping[str, Any], estimators: Sequence[str],
                 seed: int = 0, bridge_proposal: str = "normal") -> list[EvidenceRow]:
    """Each estimator on each fit it applies to; ``fits`` maps method -> Fit, or -> a message
    when that fit failed. A ZooError becomes an "n/a" row, never a crash."""
    rows = []
    done = [f for f in fits.values() if not isinstance(f, str)]
    for est in estimators:
        sources = _SOURCES[est]
        if est == "exact":
            sources = (next((m for m, f in fits.items() if not isinstance(f, str)), "any"),)
        elif not any(m in fits for m in sources):  # one n/a, naming every fit that would do
            rows.append(EvidenceRow(label, est, "/".join(sources),
                                    error=f"needs a {' or '.join(sources)} fit; this run has none"))
            continue
        for method in sources:
            row = EvidenceRow(label, est, method)
            fit = fits.get(method) if est != "exact" else (done[0] if done else "no fit succeeded")
            if fit is None:
                continue  # importance from the other fit method only
            if isinstance(fit, str):
                row.error = fit if est == "exact" else f"the {method} fit failed: {fit}"
                rows.append(row)
                continue
            kw: dict[str, Any] = {}
            if est in ("importance", "bridge"):
                kw["seed"] = seed
            if est == "bridge":
                kw["proposal"] = bridge_proposal
            try:
                row.evidence = _estimate(fit, est, kw)
            except ZooError as e:
                row.error = " ".join(str(e).split())
            rows.append(row)
    return rows


def _estimate(fit: "Fit", est: str, kw: dict) -> Evidence:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return fit.log_evidence(est, **kw)


def best_estimates(rows: Sequence[EvidenceRow]) -> dict[str, EvidenceRow]:
    """Per model, the most accurate estimate available (see PREFERENCE), preferring one
    without warnings (e.g. Pareto k̂ > 0.7) when there is a choice."""
    out: dict[str, EvidenceRow] = {}
    for label in dict.fromkeys(r.model for r in rows):
        mine = [r for r in rows if r.model == label and r.evidence is not None]

        def rank(r: EvidenceRow) -> tuple[bool, int]:
            key = (r.estimator, None if r.estimator == "exact" else r.fit)  # exact: any fit
            return bool(r.evidence.warnings), PREFERENCE.index(key)

        if mine:
            out[label] = min(mine, key=rank)
    return out
