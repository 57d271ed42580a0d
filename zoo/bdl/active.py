"""Pool-based active learning: which unlabelled point to label next, by the posterior predictive.

A Bayesian model fitted to the labelled set L gives S posterior draws θ_s, hence class
probabilities p_s(y | x) at every pool point (``zoo.uncertainty.ClassificationPredictive``). The
acquisition functions score the pool from them:

    BALD          I(y; θ | x, L) = H[p̄(y | x)] − E_s H[p_s(y | x)]   (Houlsby et al. 2011)
    max entropy   H[p̄(y | x)],  p̄ = E_s p_s                           (total uncertainty)
    random        uniform over the unlabelled pool

BALD is the mutual information between the label and the parameters: high where the draws
disagree (epistemic), zero where they agree, even on a coin flip. Max entropy cannot tell a
point the model is unsure about from one whose label is noise: once the model has learned that
a region's labels are coin flips, p̄ = ½ there is the highest entropy there is, and max entropy
keeps buying labels that teach it little; BALD's score there falls as the draws come to agree.

The model: the zoo's ``logistic_regression`` on radial-basis features φ_j(x) =
exp(−|x − c_j|² / (2 ℓ²)) (centres c_j on a grid), fitted by ``zoo.fit(..., method="laplace")``.
Its log posterior is concave, so the Gaussian approximation is good, a fit takes about a
second on one core (the recipe refits at every round), and the uncertainty of the function grows
away from the labelled points, which is what BALD measures. (A network, by Bayes by backprop or
MC dropout, would cost more per round, and mean-field VI is known to under-state epistemic
uncertainty; HMC would be exact up to Monte Carlo error at ~10× the cost per fit.)

The task (synthetic and 2-D, so the Bayes-optimal answer is known exactly): x ~ Uniform([-3,3]²),

    p(y = 1 | x) = ½ + (1 − n(x)) (σ(6 (x₂ − 1.2 sin(1.5 x₁))) − ½),  n(x) = σ(4 (x₁ − 1)):

a wavy boundary where x₁ < 1 and coin-flip labels where x₁ > 1 (a third of the space).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..errors import ConvergenceWarning, ZooError, unknown
from ..uncertainty import ClassificationPredictive

ACQUISITIONS = ("bald", "max_entropy", "random")
HOULSBY = ("Houlsby, Huszár, Ghahramani & Lengyel (2011), Bayesian active learning for "
           "classification and preference learning, arXiv:1112.5745 (BALD)")
GAL = ("Gal, Islam & Ghahramani (2017), Deep Bayesian active learning with image data, ICML")
BOX = 3.0  # inputs on [-BOX, BOX]²
NOISY = 0.5  # a point is in the noisy region when n(x) > NOISY


# -- the task -------------------------------------------------------------------------------
def noise_level(x: Tensor) -> Tensor:
    """n(x) = σ(4 (x₁ − 1)): 0 on the left, 1 (labels are coin flips) on the right."""
    return torch.sigmoid(4.0 * (x[:, 0] - 1.0))


def true_probs(x: Tensor) -> Tensor:
    """p(y = 1 | x) of the task (see the module docstring)."""
    clean = torch.sigmoid(6.0 * (x[:, 1] - 1.2 * torch.sin(1.5 * x[:, 0])))
    return 0.5 + (1.0 - noise_level(x)) * (clean - 0.5)


def make_task(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """n points: x (n, 2), labels y (n,) drawn from p(y | x), and p(y = 1 | x) (n,)."""
    x = (torch.rand(n, 2, generator=generator, dtype=torch.float64) * 2 - 1) * BOX
    p = true_probs(x)
    y = (torch.rand(n, generator=generator, dtype=torch.float64) < p).long()
    return x, y, p


# -- the model ------------------------------------------------------------------------------
def rbf_features(x: Tensor, per_axis: int, lengthscale: float) -> Tensor:
    """φ_j(x) = exp(−|x − c_j|² / (2 ℓ²)), centres c_j on a per_axis² grid over the box."""
    axis = torch.linspace(-BOX, BOX, per_axis, dtype=x.dtype)
    centres = torch.cartesian_prod(axis, axis)  # (J, 2)
    return torch.exp(-torch.cdist(x, centres).square() / (2 * lengthscale**2))


def predictive(fit, features: Tensor) -> ClassificationPredictive:
    """The Laplace fit's predictive at the rows of ``features``: p_s(y = 1) = σ(α_s + φ β_s)."""
    draws = fit.draws(["alpha", "beta"])
    p1 = torch.sigmoid(draws["alpha"].unsqueeze(-1) + draws["beta"] @ features.T)  # (S, N)
    return ClassificationPredictive(torch.stack([1 - p1, p1], -1))


# -- acquisition ----------------------------------------------------------------------------
def scores(name: str, pred: ClassificationPredictive,
           generator: torch.Generator | None = None) -> Tensor:
    """The acquisition score of every point of ``pred`` (higher = label it first)."""
    if name == "bald":
        return pred.epistemic  # H[p̄] − E_s H[p_s]
    if name == "max_entropy":
        return pred.total  # H[p̄]
    if name == "random":
        return torch.rand(pred.probs.shape[1], generator=generator, dtype=pred.probs.dtype)
    raise unknown("acquisition", name, ACQUISITIONS)


def acquire(score: Tensor, labelled: Tensor, k: int) -> Tensor:
    """Indices of the k highest-scoring unlabelled points (``labelled``: a bool mask), best
    first; ties go to the lower index. Top-k of one score ignores that the k labels may be
    redundant (BatchBALD, Kirsch et al. 2019, would not): small k keeps this mild."""
    free = (~labelled).nonzero().squeeze(-1)
    if k > len(free):
        raise ZooError(f"acquire: {k} points asked for but only {len(free)} are unlabelled")
    order = torch.argsort(-score[free], stable=True)
    return free[order[:k]]


# -- the experiment -------------------------------------------------------------------------
@dataclass
class ActiveConfig:
    """The recipe's settings (defaults: ``DEFAULTS``)."""

    acquisitions: list[str]
    seeds: int
    pool_size: int
    test_size: int
    initial_labels: int
    acquisition_size: int
    max_labels: int
    report_at: list[int]
    centres_per_axis: int
    lengthscale: float
    prior_scale: float
    laplace: dict[str, Any]

    @property
    def label_counts(self) -> list[int]:
        return list(range(self.initial_labels, self.max_labels + 1, self.acquisition_size))


DEFAULTS: dict[str, Any] = {
    "acquisitions": list(ACQUISITIONS), "seeds": 5, "pool_size": 1000, "test_size": 2000,
    "initial_labels": 10, "acquisition_size": 5, "max_labels": 110, "report_at": [20, 50, 110],
    "model": {"centres_per_axis": 7, "lengthscale": 1.0, "prior_scale": 2.5},
    "laplace": {"num_samples": 500, "adam_steps": 200, "lbfgs_steps": 100},
}


def validate(values: Mapping[str, Any], where: str) -> ActiveConfig:
    """An ``ActiveConfig`` from the [experiment] values (types already checked against
    ``DEFAULTS``); a ``ZooError`` names the key and what is allowed."""
    from ..inference import validate_settings

    for name in values["acquisitions"]:
        if name not in ACQUISITIONS:
            raise ZooError(f"{where}.acquisitions: " + str(unknown("acquisition", name, ACQUISITIONS)))
    for key in ("seeds", "pool_size", "test_size", "initial_labels", "acquisition_size",
                "max_labels"):
        if values[key] < 1:
            raise ZooError(f"{where}.{key} must be >= 1, got {values[key]}")
    model = values["model"]
    if model["centres_per_axis"] < 1 or not model["lengthscale"] > 0 or not model["prior_scale"] > 0:
        raise ZooError(f"{where}.model: centres_per_axis must be >= 1 and lengthscale, "
                       f"prior_scale > 0, got {dict(model)}")
    validate_settings("laplace", values["laplace"], f"{where}.laplace")
    config = ActiveConfig(values["acquisitions"], values["seeds"], values["pool_size"],
                          values["test_size"], values["initial_labels"], values["acquisition_size"],
                          values["max_labels"], list(values["report_at"]), model["centres_per_axis"],
                          float(model["lengthscale"]), float(model["prior_scale"]),
                          dict(values["laplace"]))
    if not config.initial_labels < config.max_labels <= config.pool_size:
        raise ZooError(f"{where}: need initial_labels < max_labels <= pool_size, got "
                       f"{config.initial_labels}, {config.max_labels}, {config.pool_size}")
    if (config.max_labels - config.initial_labels) % config.acquisition_size:
        raise ZooError(f"{where}.max_labels={config.max_labels} is not initial_labels + a whole "
                       f"number of rounds of acquisition_size={config.acquisition_size}")
    bad = [n for n in config.report_at if n not in config.label_counts]
    if bad or not config.report_at:
        raise ZooError(f"{where}.report_at={config.report_at}: each must be a label count the "
                       f"run reaches: {config.initial_labels}, "
                       f"{config.initial_labels + config.acquisition_size}, ..., {config.max_labels}")
    return config


def _fit(config: ActiveConfig, features: Tensor, y: Tensor, seed: int):
    import zoo

    data = {"x": features, "y": y.double(), "prior_scale": config.prior_scale}
    with warnings.catch_warnings():
        # Each fit's failed checks are tallied into the report instead (see run_curve).
        warnings.simplefilter("ignore", ConvergenceWarning)
        return zoo.fit("logistic_regression", data, method="laplace", seed=seed, **config.laplace)


def run_curve(config: ActiveConfig, seed: int, acquisition: str) -> tuple[list[dict], dict]:
    """One learning curve: fit, score the pool, label the best ``acquisition_size``, repeat.
    The pool, test set and initial labels depend on ``seed`` only, so every acquisition
    function starts from the same labels. Returns one row per label count and the run's
    extras (the labelled indices in order, failed fit checks)."""
    gen = torch.Generator().manual_seed(seed)
    x_pool, y_pool, _ = make_task(config.pool_size, gen)
    x_test, y_test, _ = make_task(config.test_size, gen)
    labelled = torch.zeros(config.pool_size, dtype=torch.bool)
    order = torch.randperm(config.pool_size, generator=gen)[: config.initial_labels].tolist()
    labelled[order] = True
    phi_pool = rbf_features(x_pool, config.centres_per_axis, config.lengthscale)
    phi_test = rbf_features(x_test, config.centres_per_axis, config.lengthscale)
    noisy_pool = noise_level(x_pool) > NOISY
    clean_test = noise_level(x_test) <= NOISY
    pick_gen = torch.Generator().manual_seed(seed * len(ACQUISITIONS) + ACQUISITIONS.index(acquisition))
    rows, failed_checks = [], {}
    while True:
        idx = torch.tensor(order)
        fit = _fit(config, phi_pool[idx], y_pool[idx], seed)
        checks = fit.checks()
        for name in checks.loc[~checks["passed"].astype(bool) & checks["kind"].ne("info"), "check"]:
            failed_checks[name] = failed_checks.get(name, 0) + 1
        test = predictive(fit, phi_test)
        acquired = idx[config.initial_labels:]
        latest = idx[max(config.initial_labels, len(order) - config.acquisition_size):]
        rows.append({"acquisition": acquisition, "seed": seed, "labels": len(order),
                     "accuracy": test.accuracy(y_test),
                     "nll": float(-test.log_likelihood(y_test).mean()),
                     "clean_accuracy": float((test.mean_probs.argmax(-1) == y_test)[clean_test]
                                             .double().mean()),
                     "noisy_fraction": float(noisy_pool[acquired].double().mean())
                     if len(acquired) else math.nan,
                     "noisy_in_round": float(noisy_pool[latest].double().mean())
                     if len(acquired) else math.nan,
                     "gradient_norm": float(fit.info["gradient_norm_at_mode"])})
        if len(order) >= config.max_labels:
            return rows, {"order": order, "failed_checks": failed_checks}
        pool = predictive(fit, phi_pool)
        new = acquire(scores(acquisition, pool, pick_gen), labelled, config.acquisition_size)
        labelled[new] = True
        order += new.tolist()


def bayes_optimal(config: ActiveConfig, seed: int) -> dict[str, float]:
    """Test accuracy and NLL of the true p(y | x) on the seed's test set (the best possible)."""
    gen = torch.Generator().manual_seed(seed)
    make_task(config.pool_size, gen)  # the same stream as run_curve
    x, y, p = make_task(config.test_size, gen)
    probs = torch.stack([1 - p, p], -1)
    clean = noise_level(x) <= NOISY
    right = (probs.argmax(-1) == y).double()
    return {"accuracy": float(right.mean()), "clean_accuracy": float(right[clean].mean()),
            "nll": float(-probs.gather(-1, y.unsqueeze(-1)).log().mean())}


def run(config: ActiveConfig, seed: int, progress: bool = False
        ) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Every acquisition × seed: (curves, Bayes-optimal reference per seed, extras)."""
    rows, optimal, extras = [], [], {}
    start = time.perf_counter()
    for s in range(seed, seed + config.seeds):
        optimal.append({"seed": s, **bayes_optimal(config, s)})
        for name in config.acquisitions:
            curve, extra = run_curve(config, s, name)
            rows += curve
            extras[(name, s)] = extra
            if progress:
                print(f"  seed {s} {name}: accuracy {curve[-1]['accuracy']:.3f} at "
                      f"{curve[-1]['labels']} labels ({time.perf_counter() - start:.0f} s)")
    extras["time_s"] = time.perf_counter() - start
    return pd.DataFrame(rows), pd.DataFrame(optimal), extras


def summarise(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard error (sd / √seeds) over seeds per acquisition × label count."""
    metrics = ["accuracy", "nll", "clean_accuracy", "noisy_fraction", "noisy_in_round"]
    grouped = curves.groupby(["acquisition", "labels"], sort=False)[metrics]
    mean, se = grouped.mean(), grouped.std(ddof=1) / np.sqrt(grouped.count())
    out = mean.add_suffix("_mean").join(se.add_suffix("_se")).reset_index()
    return out[["acquisition", "labels"] + [f"{m}_{s}" for m in metrics for s in ("mean", "se")]]


# -- the report -----------------------------------------------------------------------------
NAMES = {"bald": "BALD", "max_entropy": "max entropy", "random": "random"}


def describe(config: ActiveConfig) -> str:
    counts = config.label_counts
    return (f"  acquisitions: {', '.join(config.acquisitions)}; {config.seeds} seeds\n"
            f"  pool {config.pool_size}, test {config.test_size}; labels {counts[0]} -> "
            f"{counts[-1]} in {len(counts) - 1} rounds of {config.acquisition_size} "
            f"({len(counts) * config.seeds * len(config.acquisitions)} Laplace fits)\n"
            f"  model: logistic_regression on {config.centres_per_axis ** 2} RBF features "
            f"(lengthscale {config.lengthscale}, prior_scale {config.prior_scale}); "
            f"laplace {config.laplace}")


def paired_differences(curves: pd.DataFrame, budgets: Sequence[int], a: str, b: str) -> pd.DataFrame:
    """a − b per seed at each budget (same pool, test set and first labels), mean ± se."""
    rows = []
    for n in budgets:
        at = curves[curves.labels == n].set_index(["seed", "acquisition"])
        for metric in ("accuracy", "clean_accuracy", "nll"):
            d = (at[metric].xs(a, level="acquisition") - at[metric].xs(b, level="acquisition"))
            rows.append({"labels": n, "metric": metric, "difference": f"{NAMES[a]} − {NAMES[b]}",
                         "mean": d.mean(), "se": d.std(ddof=1) / math.sqrt(len(d))})
    return pd.DataFrame(rows)


def _pm(mean: float, se: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(mean) else (f"{mean:.{digits}f} ± {se:.{digits}f}"
                                          if not math.isnan(se) else f"{mean:.{digits}f}")


SHARE = "share of the acquired labels in the noisy region"


def budget_table(summary: pd.DataFrame, optimal: pd.DataFrame,
                 budgets: Sequence[int]) -> pd.DataFrame:
    """Mean ± se per acquisition at each budget, and the Bayes-optimal answer."""
    rows = []
    for n in budgets:
        for r in summary[summary.labels == n].itertuples():
            rows.append({"labels": n, "acquisition": NAMES[r.acquisition],
                         "test accuracy": _pm(r.accuracy_mean, r.accuracy_se),
                         "test NLL": _pm(r.nll_mean, r.nll_se),
                         "accuracy off the noisy region": _pm(r.clean_accuracy_mean,
                                                              r.clean_accuracy_se),
                         SHARE: _pm(r.noisy_fraction_mean, r.noisy_fraction_se, 2)})
    se = optimal.std(ddof=1) / math.sqrt(len(optimal))
    rows.append({"labels": "(all)", "acquisition": "Bayes-optimal p(y ∣ x)",
                 "test accuracy": _pm(optimal.accuracy.mean(), se.accuracy),
                 "test NLL": _pm(optimal.nll.mean(), se.nll),
                 "accuracy off the noisy region": _pm(optimal.clean_accuracy.mean(),
                                                      se.clean_accuracy), SHARE: ""})
    return pd.DataFrame(rows)


def in_words(summary: pd.DataFrame, budgets: Sequence[int]) -> list[str]:
    """What the numbers say, ranked (from the numbers, never typed in)."""
    lines = []
    for n in budgets:
        at = summary[summary.labels == n]
        acc = at.sort_values("accuracy_mean", ascending=False)
        nll = at.sort_values("nll_mean")
        lines.append(f"- {n} labels: test accuracy " + " > ".join(
            f"{NAMES[r.acquisition]} {r.accuracy_mean:.3f}" for r in acc.itertuples())
            + "; test NLL " + " < ".join(f"{NAMES[r.acquisition]} {r.nll_mean:.3f}"
                                         for r in nll.itertuples()) + ".")
    rounds = sorted(summary.labels.unique())[1:]
    half = rounds[: len(rounds) // 2], rounds[len(rounds) // 2:]
    shares = []
    for name, g in summary.groupby("acquisition", sort=False):
        first, second = (g[g.labels.isin(h)].noisy_in_round_mean.mean() for h in half)
        shares.append(f"{NAMES[name]} {first:.0%} → {second:.0%}")
    if len(rounds) > 1:
        lines.append(f"- Share of the acquired labels that lie in the noisy region (a third of "
                     f"the pool), in the rounds up to {half[0][-1]} labels → in the later rounds: "
                     + ", ".join(shares) + ".")
    return lines


def curves_figure(summary: pd.DataFrame, optimal: pd.DataFrame, path: Path) -> None:
    """Test accuracy, test NLL and the share of labels bought in the noisy region against the
    number of labels, mean ± standard error bands."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("accuracy", "test accuracy"), ("nll", "test NLL (nats)"),
              ("clean_accuracy", "test accuracy off the noisy region"),
              ("noisy_in_round", "share of each round's labels in the noisy region")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, (metric, title) in zip(axes, panels):
        for i, (name, g) in enumerate(summary.groupby("acquisition", sort=False)):
            m, s = g[f"{metric}_mean"].to_numpy(), g[f"{metric}_se"].fillna(0).to_numpy()
            ax.plot(g.labels, m, color=f"C{i}", label=NAMES[name])
            ax.fill_between(g.labels, m - s, m + s, color=f"C{i}", alpha=0.25)
        if metric in optimal:
            ax.axhline(optimal[metric].mean(), color="k", ls="--", lw=1, label="Bayes-optimal")
        ax.set(xlabel="labels", title=title)
    axes[3].axhline(1 / 3, color="grey", ls=":", lw=1, label="the region's share of the pool")
    axes[0].legend()
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def acquired_figure(config: ActiveConfig, extras: Mapping, seed: int, path: Path) -> None:
    """Where each acquisition function bought its labels (one seed) over the true p(y = 1 | x)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = torch.Generator().manual_seed(seed)
    x_pool, y_pool, _ = make_task(config.pool_size, gen)
    grid = torch.linspace(-BOX, BOX, 121, dtype=torch.float64)
    mesh = torch.cartesian_prod(grid, grid)
    p = true_probs(mesh).reshape(121, 121).T
    fig, axes = plt.subplots(1, len(config.acquisitions), figsize=(5 * len(config.acquisitions), 4.6))
    for ax, name in zip(np.atleast_1d(axes), config.acquisitions):
        ax.imshow(p.numpy(), origin="lower", extent=(-BOX, BOX, -BOX, BOX), cmap="RdBu_r",
                  vmin=0, vmax=1, alpha=0.35)
        order = extras[(name, seed)]["order"]
        first, rest = order[: config.initial_labels], order[config.initial_labels:]
        ax.scatter(*x_pool[rest].T, c=y_pool[rest], cmap="RdBu_r", vmin=0, vmax=1, s=18,
                   edgecolors="k", linewidths=0.5)
        ax.scatter(*x_pool[first].T, marker="s", c=y_pool[first], cmap="RdBu_r", vmin=0, vmax=1,
                   s=30, edgecolors="g", linewidths=1.5)
        ax.axvline(1.0, color="grey", ls=":")
        ax.set(title=f"{NAMES[name]}: {len(rest)} acquired (squares: initial)", xlim=(-BOX, BOX),
               ylim=(-BOX, BOX))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_and_report(config: ActiveConfig, seed: int, dest: Path, command: str, smoke: bool = False,
                   progress: bool = False) -> Path:
    """Run every acquisition × seed and write ``dest`` (report.md, curves.csv, summary.csv,
    bayes_optimal.csv, figures/) atomically."""
    from ..inference import versions
    from ..report import SMOKE_BANNER, atomic_directory, md_table

    cpu = time.process_time()
    curves, optimal, extras = run(config, seed, progress)
    cpu = time.process_time() - cpu
    summary = summarise(curves)
    doc = (__doc__ or "").split("\n\n", 1)[1].strip()
    lines = ["# active_learning", ""]
    if smoke:
        lines += [SMOKE_BANNER, ""]
    lines += [doc, "", "## Settings", "", f"- command: `{command}`",
              f"- seeds: {seed}..{seed + config.seeds - 1} (each: its own pool, test set and "
              "initial labels, shared by the acquisition functions)",
              "- " + describe(config).strip().replace("\n  ", "\n- "),
              f"- time: {extras['time_s']:.0f} s wall, {cpu:.0f} s CPU, one process, torch "
              f"threads: {torch.get_num_threads()}",
              "- references: " + "; ".join([HOULSBY, GAL]),
              "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
              "## Learning curves", "",
              "Mean ± standard error over seeds (bands). The noisy region is x₁ > 1, where "
              "n(x) > ½.", "", "![learning curves](figures/learning_curves.png)", "",
              "## At a few budgets", "", *in_words(summary, config.report_at), "",
              md_table(budget_table(summary, optimal, config.report_at)),
              "", "Paired over seeds (same pool, test set and initial labels), so the seed-to-seed "
              "spread of the task cancels:", ""]
    pairs = [("bald", "max_entropy"), ("bald", "random"), ("max_entropy", "random")]
    diffs = pd.concat([paired_differences(curves, config.report_at, a, b) for a, b in pairs
                       if a in config.acquisitions and b in config.acquisitions] or [pd.DataFrame()])
    if len(diffs):
        diffs["mean ± se"] = [_pm(m, s, 4) for m, s in zip(diffs["mean"], diffs["se"])]
        diffs["beyond 2 se"] = ["yes" if abs(m) > 2 * s else "no"
                                  for m, s in zip(diffs["mean"], diffs["se"])]
        lines += [md_table(diffs.drop(columns=["mean", "se"])), ""]
    lines += ["## Where the labels went", "", f"Seed {seed}; colour: the true p(y = 1 | x) "
              "(white = ½); the dotted line is x₁ = 1, right of it labels are coin flips.", "",
              "![acquired points](figures/acquired.png)", "", "## Fit checks", ""]
    failed: dict[str, int] = {}
    for key, extra in extras.items():
        if key != "time_s":
            for name, count in extra["failed_checks"].items():
                failed[name] = failed.get(name, 0) + count
    fits = len(curves)
    lines.append(f"{fits} Laplace fits; largest gradient norm at a mode: "
                 f"{curves.gradient_norm.max():.2g}. Failed checks: "
                 + (", ".join(f"{k} in {v} of {fits} fits" for k, v in failed.items()) or "none") + ".")
    if "max Pareto k (PSIS-LOO)" in failed:
        lines.append("PSIS-LOO is not used here: with tens of labels and "
                     f"{config.centres_per_axis ** 2} features every label is influential, so "
                     "k̂ > 0.7 says leave-one-out by importance sampling is unreliable, not that "
                     "the Laplace fit is wrong (its gradient norm and Hessian checks passed).")
    lines += ["", "Files: `curves.csv` (every seed, acquisition and label count), `summary.csv` "
              "(mean and standard error over seeds), `bayes_optimal.csv`, `figures/`.", ""]
    with atomic_directory(dest) as tmp:
        curves.to_csv(tmp / "curves.csv", index=False, float_format="%.6g", lineterminator="\n")
        summary.to_csv(tmp / "summary.csv", index=False, float_format="%.6g", lineterminator="\n")
        optimal.to_csv(tmp / "bayes_optimal.csv", index=False, float_format="%.6g",
                       lineterminator="\n")
        (tmp / "figures").mkdir()
        curves_figure(summary, optimal, tmp / "figures" / "learning_curves.png")
        acquired_figure(config, extras, seed, tmp / "figures" / "acquired.png")
        (tmp / "report.md").write_text("\n".join(lines))
    return Path(dest)
