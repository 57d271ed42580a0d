"""The verdict of simulation-based calibration: uniformity tests of ranks, and ``SBCResult``.

If a method's posterior is the true p(θ | y), the rank of the prior draw θ_s among L posterior
draws is uniform on {0, ..., L} (see ``zoo.sbc``). Non-uniform ranks locate the error:
∪-shaped = posterior too narrow, ∩-shaped = too wide, skewed = biased. Per parameter we run four
tests of uniformity:

- χ² over B bins of the ranks (B = N // 10, 2..20: ten expected counts per bin);
- the simultaneous ECDF band of Säilynoja, Bürkner & Vehtari (2022, Statistics and Computing
  32:32): with z_i = j_i / (L+1), N·F̂(z_i) = #{r_s < j_i} ~ Binomial(N, z_i) is a Markov chain
  in i; its exact law gives P(every point's two-sided binomial tail probability > g), from which
  both the 1-α band (largest such g) and an exact p-value for min_i p_i follow — no simulation;
- the rank mean (z-test: bias) and the mean squared centred rank (z-test: width), normal
  approximations with the exact discrete-uniform moments; they are the most powerful of the four
  against a shifted and a too-narrow/too-wide posterior.

Multiple testing: 4 tests × P parameters, Bonferroni, so a calibrated method is called
miscalibrated with probability <= alpha (default 0.01) per model × method.

Nothing here changes a rank, so this module is left out of the SBC cells' code hash
(``zoo.sbc_catalogue.NOT_IN_RANKS``): a fix to a test or a verdict does not rerun the fits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

APPROXIMATE = ("svi", "laplace")  # their miscalibration is expected, and labelled so
ALPHA = 0.01  # family-wise level per model x method
TESTS = ("chi2", "ecdf", "mean", "dispersion")
MIN_RANKS = 10  # fewer ranked fits than this: no verdict
MAX_FAILED = 0.1  # more failed fits than this fraction of N fail the verdict whatever the ranks
LOG_LIKELIHOOD = "log_likelihood"  # zoo.sbc's joint test quantity, log p(y | θ)
# "exact" draws each site's closed-form marginal on its own: right marginals, not the joint
# (NIG's beta and sigma2 come out independent), so a joint quantity does not test it.
MARGINALS_ONLY = ("exact",)


# -- uniformity tests -----------------------------------------------------------------------
def _eval_points(num_ranks: int, num_draws: int) -> np.ndarray:
    """Integer thresholds j_i (1..L) where the ECDF of ranks is evaluated: all of them when
    L <= N, else N evenly spaced (the ECDF of N ranks cannot resolve more)."""
    k = min(num_draws, num_ranks)
    return np.unique(np.round(np.linspace(0, num_draws + 1, k + 2)[1:-1]).astype(int))


@functools.lru_cache(maxsize=4)  # N=400: 80 MB of transitions
def _ecdf_law(num_ranks: int, num_draws: int) -> tuple[np.ndarray, np.ndarray, list]:
    """(z, pointwise two-sided tail probabilities (K, N+1), transition matrices).

    N F̂(z_i) given N F̂(z_{i-1}) = k is k + Binomial(N - k, q_i), q_i = (z_i - z_{i-1}) /
    (1 - z_{i-1}): T_i[k, k'] = C(N-k, k'-k) q_i^(k'-k) (1 - q_i)^(N-k'), built in log space."""
    from scipy.special import gammaln

    n = num_ranks
    z = _eval_points(n, num_draws) / (num_draws + 1)
    x = np.arange(n + 1)
    tail = np.minimum(1.0, 2 * np.minimum(stats.binom.cdf(x[None], n, z[:, None]),
                                          stats.binom.sf(x[None] - 1, n, z[:, None])))
    k, k2 = x[:, None], x[None, :]
    upper = k2 >= k
    log_choose = np.where(upper, gammaln(n - k + 1) - gammaln(np.maximum(k2 - k, 0) + 1)
                          - gammaln(n - k2 + 1), -np.inf)
    prev = np.concatenate([[0.0], z[:-1]])
    q = (z - prev) / (1 - prev)
    trans = [np.exp(log_choose + np.where(upper, (k2 - k) * np.log(qi), 0.0)
                    + (n - k2) * np.log1p(-qi)) for qi in q]
    return z, tail, trans


def _prob_all_above(tail: np.ndarray, trans: Sequence[np.ndarray], g: float) -> float:
    """P(min_i p_i > g) under uniform ranks, by the forward recursion over evaluation points."""
    v = np.zeros(tail.shape[1])
    v[0] = 1.0
    for t, ok in zip(trans, tail > g):
        v = (v @ t) * ok
    return float(v.sum())


def ecdf_pvalue(ranks: np.ndarray, num_draws: int) -> float:
    """Exact p-value of the simultaneous ECDF test: P(min_i p_i <= observed min_i p_i)."""
    ranks = np.asarray(ranks)
    z, tail, trans = _ecdf_law(len(ranks), num_draws)
    counts = (ranks[None, :] < _eval_points(len(ranks), num_draws)[:, None]).sum(1)
    observed = tail[np.arange(len(z)), counts].min()
    return min(1.0, max(0.0, 1.0 - _prob_all_above(tail, trans, observed)))  # round-off


@functools.lru_cache(maxsize=64)
def ecdf_band(num_ranks: int, num_draws: int, alpha: float) -> tuple[np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """(z, lower, upper): the simultaneous 1-alpha band for the ECDF F̂(z) of uniform ranks
    (Säilynoja et al. 2022): the pointwise level g is the largest with P(all inside) >= 1-alpha,
    found by bisection on log g; F̂ leaves the band iff the test rejects at level alpha."""
    z, tail, trans = _ecdf_law(num_ranks, num_draws)
    lo, hi = -40.0, 0.0  # log g; 32 halvings leave it within 1e-8 (relative)
    for _ in range(32):
        mid = (lo + hi) / 2
        if 1.0 - _prob_all_above(tail, trans, float(np.exp(mid))) <= alpha:
            lo = mid
        else:
            hi = mid
    inside = tail > np.exp(lo)
    x = np.arange(num_ranks + 1)
    lower = np.where(inside, x, num_ranks + 1).min(1) / num_ranks
    upper = np.where(inside, x, -1).max(1) / num_ranks
    return z, lower, upper


def _moments(num_draws: int) -> tuple[float, float]:
    """E c² (= Var c) and sd(c²) of a centred discrete-uniform rank c = r - L/2."""
    c = np.arange(num_draws + 1) - num_draws / 2
    return float((c**2).mean()), float((c**2).std())


def chi2_bins(num_ranks: int, num_draws: int) -> np.ndarray:
    """Bin edges over 0..L+1: about ten expected ranks per bin, 2 to 20 bins."""
    bins = int(np.clip(num_ranks // 10, 2, min(20, num_draws + 1)))
    return np.floor(np.linspace(0, num_draws + 1, bins + 1)).astype(int)


def uniformity(ranks: np.ndarray, num_draws: int) -> dict[str, float]:
    """The four tests on one parameter's ranks (integers in 0..L); NaN ranks are ignored."""
    r = np.asarray(ranks, dtype=float)
    r = r[~np.isnan(r)].astype(int)
    n = len(r)
    if n < 2:
        return {"n": n, **{f"{t}_p": float("nan") for t in TESTS}, "mean_z": float("nan"),
                "dispersion_z": float("nan")}
    edges = chi2_bins(n, num_draws)
    observed = np.histogram(r, bins=edges)[0]
    expected = n * np.diff(edges) / (num_draws + 1)
    chi2 = stats.chisquare(observed, expected)
    var, sd_c2 = _moments(num_draws)
    c = r - num_draws / 2
    mean_z = c.mean() / np.sqrt(var / n)
    disp_z = ((c**2).mean() - var) / (sd_c2 / np.sqrt(n))
    return {"n": n, "chi2_p": float(chi2.pvalue), "ecdf_p": ecdf_pvalue(r, num_draws),
            "mean_z": float(mean_z), "mean_p": float(2 * stats.norm.sf(abs(mean_z))),
            "dispersion_z": float(disp_z), "dispersion_p": float(2 * stats.norm.sf(abs(disp_z)))}


# -- the result -----------------------------------------------------------------------------
@dataclass
class SBCResult:
    """Ranks (simulation × parameter, NaN where the fit failed) and what each fit did."""

    model: str
    method: str
    num_draws: int  # L: ranks run over 0..L
    seed: int
    ranks: pd.DataFrame
    simulations: pd.DataFrame  # per fit: status, error, converged, failed_checks, min_ess, cpu_s
    settings: dict[str, Any]
    dataset: str
    dataset_args: dict[str, Any] = field(default_factory=dict)
    args: dict[str, Any] = field(default_factory=dict)  # model hyperparameters
    alpha: float = ALPHA
    notes: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)  # versions, time_s

    @property
    def num_simulations(self) -> int:
        return len(self.simulations)

    @property
    def num_failed(self) -> int:
        """Fits that raised or ran over the CPU limit (not the skipped ones)."""
        return int(self.simulations["status"].isin(["error", "timeout"]).sum())

    @property
    def num_skipped(self) -> int:
        """Simulations not run: the verdict was settled, or the CPU budget spent."""
        return int(self.simulations["status"].isin(["skipped", "budget"]).sum())

    @property
    def num_not_converged(self) -> int:
        return int((self.simulations["converged"] == False).sum())  # noqa: E712 (NaN: no fit)

    @property
    def approximate(self) -> bool:
        return self.method in APPROXIMATE

    @property
    def level(self) -> float:
        """Each test's level: alpha / (4 tests × P parameters), Bonferroni."""
        return self.alpha / (len(TESTS) * max(1, len(self.tested)))

    @property
    def tested(self) -> list[str]:
        """The ranked quantities the tests use (all but the joint one for marginal draws)."""
        return [c for c in self.ranks.columns
                if not (c == LOG_LIKELIHOOD and self.method in MARGINALS_ONLY)]

    @functools.cached_property
    def tests(self) -> pd.DataFrame:
        """Per parameter: the four p-values, the z of the rank mean and dispersion, what the
        ranks say ("ok", "too narrow", "biased low", ...) and whether any test rejects."""
        rows = []
        for param in self.tested:
            t = uniformity(self.ranks[param].to_numpy(), self.num_draws)
            reject = any(t[f"{k}_p"] <= self.level for k in TESTS)
            t["min_p"] = min(t[f"{k}_p"] for k in TESTS)
            t["band"] = ("n/a" if t["n"] < 2 else
                         "outside" if t["ecdf_p"] <= self.level else "inside")
            t["reading"] = _reading(t, self.level) if reject else "ok"
            t["reject"] = reject
            rows.append({"param": param, **t})
        return pd.DataFrame(rows)

    @property
    def calibrated(self) -> bool:
        return not self.tests["reject"].any()

    @property
    def verdict(self) -> str:
        """"pass", "FAIL" (an exact method: its posterior is wrong) or "miscalibrated
        (approximate method)"; more than 10% failed fits also fail it; "inconclusive" when
        most failures are CPU timeouts or fewer than MIN_RANKS fits were ranked."""
        status = self.simulations["status"]
        n, failed = self.num_simulations, self.num_failed
        attempted = n - int((status == "budget").sum())
        budget = f" (CPU budget: {attempted} of {n} run)" if attempted < n else ""
        label = "miscalibrated (approximate method)" if self.approximate else "FAIL"
        if failed > MAX_FAILED * attempted:
            skipped = int((status == "skipped").sum())
            stop = f"; stopped after {n - skipped}" if skipped else ""
            if (status == "timeout").sum() * 2 > failed:
                return f"inconclusive ({failed} of {n} fits failed, most over the CPU limit{stop})"
            return f"{label} ({failed} of {n} fits failed{stop})"
        ranked = attempted - failed
        if ranked < MIN_RANKS:
            return f"inconclusive ({ranked} fits ranked{budget})"
        if self.calibrated:
            return "pass" + budget
        # An exact method whose fits mostly failed their convergence checks has said why its
        # ranks are off: its settings (warmup, tree depth) are too short for this model.
        unconverged = self.num_not_converged
        if not self.approximate and 2 * unconverged > ranked:
            return (f"{label} ({unconverged} of {ranked} ranked fits not converged"
                    + (f"; {budget.strip(' ()')})" if budget else ")"))
        return label + budget

    @property
    def min_adjusted_p(self) -> float:
        """The smallest p-value over tests and parameters, Bonferroni-adjusted (× 4P)."""
        p = float(self.tests["min_p"].min()) if len(self.tests) else float("nan")
        return min(1.0, p * len(TESTS) * max(1, len(self.tested)))


def _reading(t: Mapping[str, float], level: float) -> str:
    words = []
    if t["dispersion_p"] <= level:
        words.append("too narrow" if t["dispersion_z"] > 0 else "too wide")
    if t["mean_p"] <= level:  # high ranks: the truth sits above the draws
        words.append("biased low" if t["mean_z"] > 0 else "biased high")
    return ", ".join(words) or "non-uniform"
