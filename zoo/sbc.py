"""Simulation-based calibration (SBC) of any registered model × inference method.

For s = 1..N (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, arXiv:1804.06788):

    θ_s ~ p(θ),   y_s ~ p(y | θ_s)       (the model run forward on fixed covariates)
    θ_s^(1..L)    L roughly independent draws of the method's posterior given y_s
    r_s = #{ℓ : θ_s^(ℓ) < θ_s}           per scalar component (ties broken at random)

If the method's posterior is the true p(θ | y), θ_s is one more draw from it, so every r_s is
uniform on {0, ..., L}. Non-uniform ranks locate the error: ∪-shaped = posterior too narrow,
∩-shaped = too wide, skewed = biased. Per parameter we run four tests of uniformity:

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

Thinning to L draws: ``chees`` keeps the final draw of L of its chains (independent chains after
warmup); ``nuts`` keeps L draws evenly spaced over its chains (each simulation's min bulk ESS is
recorded: below L the thinned draws are autocorrelated); ``svi``/``laplace`` keep L of their iid
draws from the approximation; ``exact`` draws L from the model's closed-form marginals. A fit that
raises, or runs over ``fit_timeout`` CPU-s, is counted as failed (no rank); a fit that ran but
failed a convergence check keeps its ranks (dropping them would bias SBC) and is counted as not
converged. Over 10% failed fits settle the verdict (the rest are skipped); ``max_cpu`` caps a
whole run, after which the tests use the ranks so far and the verdict says so.

The CLI and the ``[sbc]`` recipe table live in ``zoo.sbc_report`` (reports and figures).
"""

from __future__ import annotations

import contextlib
import functools
import resource
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyro
import torch
from scipy import stats

from . import tracing
from .errors import ZooError
from .registry import ModelSpec, get_model, load_dataset

APPROXIMATE = ("svi", "laplace")  # their miscalibration is expected, and labelled so
EXACT = "exact"  # draws from spec.exact_posterior: checks the closed forms and the machinery
NUM_SIMULATIONS, NUM_DRAWS, ALPHA = 100, 32, 0.01
FIT_TIMEOUT = 20.0  # CPU seconds per fit; a fit over it counts as failed (0: no limit)
# Per-method settings for zoo.fit, sized for a whole catalogue on two cores (see the recipe
# recipes/sbc_catalogue.toml, which repeats them); chees: num_chains = L, svi/laplace:
# num_samples = L unless set.
DEFAULTS: dict[str, dict[str, Any]] = {
    "chees": {"num_warmup": 150, "num_samples": 5},
    "nuts": {"num_chains": 1, "num_warmup": 100, "num_samples": 96, "max_tree_depth": 6},
    "svi": {"num_steps": 500, "lr": 0.2},
    "laplace": {"adam_steps": 200},
    EXACT: {},
}
TESTS = ("chi2", "ecdf", "mean", "dispersion")
RHAT_MAX = 1.05  # R-hat above this marks a fit not converged (see _posterior)
MIN_RANKS = 10  # fewer ranked fits than this: no verdict
MAX_FAILED = 0.1  # more failed fits than this fraction of N fail the verdict whatever the ranks
PosteriorFn = Callable[[dict, int, int], Mapping[str, Any]]  # (data, seed, L) -> site: (L, ...)


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
    return 1.0 - _prob_all_above(tail, trans, observed)


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


def rank(theta: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """#{draws < theta} per column, ties (discrete or point-mass posteriors) split at random."""
    less = (draws < theta[None]).sum(0)
    ties = (draws == theta[None]).sum(0)
    return less + rng.integers(0, ties + 1)


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
        return self.alpha / (len(TESTS) * max(1, self.ranks.shape[1]))

    @functools.cached_property
    def tests(self) -> pd.DataFrame:
        """Per parameter: the four p-values, the z of the rank mean and dispersion, what the
        ranks say ("ok", "too narrow", "biased low", ...) and whether any test rejects."""
        rows = []
        for param in self.ranks.columns:
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
        if attempted - failed < MIN_RANKS:
            return f"inconclusive ({attempted - failed} fits ranked{budget})"
        return ("pass" if self.calibrated else label) + budget

    @property
    def min_adjusted_p(self) -> float:
        """The smallest p-value over tests and parameters, Bonferroni-adjusted (× 4P)."""
        p = float(self.tests["min_p"].min()) if len(self.tests) else float("nan")
        return min(1.0, p * len(TESTS) * max(1, self.ranks.shape[1]))


def _reading(t: Mapping[str, float], level: float) -> str:
    words = []
    if t["dispersion_p"] <= level:
        words.append("too narrow" if t["dispersion_z"] > 0 else "too wide")
    if t["mean_p"] <= level:  # high ranks: the truth sits above the draws
        words.append("biased low" if t["mean_z"] > 0 else "biased high")
    return ", ".join(words) or "non-uniform"


# -- simulation, fitting, thinning ----------------------------------------------------------
class FitTimeout(BaseException):
    """A fit used more CPU than ``fit_timeout``. A BaseException, so that the zoo's own
    best-effort ``except Exception`` fallbacks (tracing, JIT) cannot swallow it."""


@contextlib.contextmanager
def cpu_limit(seconds: float):
    """Raise FitTimeout once this process has used ``seconds`` more CPU (SIGPROF counts CPU,
    not wall time, so a busy machine does not time fits out). Main thread only; else no limit."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise FitTimeout(f"over the limit of {seconds:g} CPU-s per fit")

    old = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


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


def simulate(spec: ModelSpec, data: Mapping[str, Any], num_simulations: int, seed: int):
    """(covariates, site -> data key of each observation, prior draws site -> (N, ...)): the
    model run forward N times on the data's covariates, in float64."""
    from .data import prepare
    from .fit import default_dtype

    with default_dtype(torch.float64):
        prepared = prepare(spec, data)
        observed = tracing.observed_keys(spec.fn, prepared)
        covariates = {k: v for k, v in prepared.items() if k not in observed.values()}
        pyro.set_rng_seed(seed)
        draws = tracing.prior_draws(spec.fn, covariates, num_simulations,
                                    vectorize=spec.vectorizable)
        ref = tracing.get_trace(spec.fn, covariates)
    return covariates, observed, draws, ref


def sbc(model: str | ModelSpec, method: str | PosteriorFn, num_simulations: int = NUM_SIMULATIONS,
        seed: int = 0, dataset: str | None = None, dataset_args: Mapping | None = None,
        num_draws: int = NUM_DRAWS, args: Mapping | None = None, alpha: float = ALPHA,
        deterministic: bool = False, fit_timeout: float = FIT_TIMEOUT, max_cpu: float = 0.0,
        progress: Callable[[int], None] | None = None, **settings) -> SBCResult:
    """Simulation-based calibration of ``model`` with ``method``: a zoo method name, "exact",
    or a function ``(data, seed, L) -> {site: (L, *shape) draws}`` (e.g. a deliberately wrong
    posterior, to see the test fail). Data sets: the model's default (or ``dataset``) with
    ``dataset_args`` supplies the covariates; ``args`` are model hyperparameters.
    ``deterministic`` ranks ``pyro.deterministic`` sites too. A fit over ``fit_timeout``
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
    dataset = dataset or spec.default_dataset
    if dataset is None:
        raise ZooError(f"model {spec.name!r} has no default data set: name one (dataset=...)")
    dataset_args, args = dict(dataset_args or {}), dict(args or {})
    covariates, observed, prior, ref = simulate(
        spec, {**load_dataset(dataset, **dataset_args), **args}, num_simulations, seed)
    notes: list[str] = []
    sites = [n for n in tracing.latent_sites(ref) if n not in observed]  # y is sampled in ref
    sites += tracing.deterministic_sites(ref) if deterministic else []
    truth: dict[str, np.ndarray] = {}
    for site in sites:
        truth.update(_flatten(site, prior[site].cpu().numpy(), 1))
    fixed = [k for k, v in truth.items() if np.ptp(v) == 0]  # e.g. a Cholesky factor's zeros
    if fixed:
        notes.append(f"not ranked (the same in every prior draw): {', '.join(fixed)}")
        truth = {k: v for k, v in truth.items() if k not in fixed}
    rng = np.random.default_rng([seed, 1])
    ranks = np.full((num_simulations, len(truth)), np.nan)
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
            with warnings.catch_warnings(), cpu_limit(fit_timeout):
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
        except (KeyboardInterrupt, SystemExit):
            raise
        except (Exception, FitTimeout) as e:  # counted and reported, never silently dropped
            row["status"] = "timeout" if isinstance(e, FitTimeout) else "error"
            row["error"] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        row["time_s"], row["cpu_s"] = time.perf_counter() - t0, _cpu() - cpu0
        rows.append(row)
        if progress:
            progress(s)
    table = pd.DataFrame(ranks, columns=list(truth))
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
