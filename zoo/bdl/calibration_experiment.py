"""Calibration of every network method on a classification task whose answer is known, before
and after temperature scaling.

The data: three classes with equal priors and Gaussian inputs in two dimensions sharing one
covariance, so the Bayes-optimal probabilities are a softmax of linear discriminants and the
best achievable test NLL, Brier score and accuracy are computed exactly, not estimated. Each
method is trained on a small training set (where over-confidence shows), its temperature is
fitted on a validation split (Guo et al. 2017), and ECE (15 bins), MCE, NLL, Brier and accuracy
are reported on the test split before and after, with reliability diagrams.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd
import torch

from ..report import atomic_directory, md_table
from ..uncertainty import ClassificationPredictive

MEANS = ((0.0, 1.5), (-1.3, -0.75), (1.3, -0.75))
COVARIANCE = ((1.0, 0.3), (0.3, 1.0))


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n points: class uniform over 3, x | class ~ Normal(MEANS[class], COVARIANCE)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    chol = torch.linalg.cholesky(torch.tensor(COVARIANCE, dtype=torch.float64))
    z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return torch.tensor(MEANS, dtype=torch.float64)[y] + z @ chol.T, y


def bayes_optimal_probs(x: torch.Tensor) -> torch.Tensor:
    """p(y | x) exactly: equal priors and a shared covariance give linear discriminants."""
    mu = torch.tensor(MEANS, dtype=torch.float64)
    prec = torch.linalg.inv(torch.tensor(COVARIANCE, dtype=torch.float64))
    logits = x @ prec @ mu.T - 0.5 * ((mu @ prec) * mu).sum(-1)
    return torch.softmax(logits, -1)


METHOD_NAMES = ("map", "bnn_mlp", "mc_dropout_mlp", "deep_ensemble", "laplace_last_layer",
                "laplace_kron")


def _methods() -> dict[str, Callable]:
    from .bbb import fit_bbb
    from .dropout import fit_mc_dropout
    from .ensemble import fit_ensemble
    from .laplace import fit_laplace, fit_map

    def map_net(x, y, seed, **kw):
        net, _ = fit_map(x, y, task="classification", seed=seed, **kw)

        class Point:  # one draw: the MAP network's own probabilities
            def predict(self, x, num_samples=1):
                with torch.no_grad():
                    return ClassificationPredictive(torch.softmax(net(x), -1).unsqueeze(0))
        return Point()

    return {
        "map": map_net,
        "bnn_mlp": lambda x, y, seed, **kw: fit_bbb(x, y, task="classification", seed=seed, **kw),
        "mc_dropout_mlp": lambda x, y, seed, **kw: fit_mc_dropout(x, y, task="classification",
                                                                   seed=seed, **kw),
        "deep_ensemble": lambda x, y, seed, **kw: fit_ensemble(x, y, task="classification",
                                                                seed=seed, **kw),
        "laplace_last_layer": lambda x, y, seed, **kw: fit_laplace(
            x, y, task="classification", subset="last_layer", structure="full", seed=seed, **kw),
        "laplace_kron": lambda x, y, seed, **kw: fit_laplace(
            x, y, task="classification", subset="all", structure="kron", seed=seed, **kw),
    }


def _log_mean_probs(pred: ClassificationPredictive) -> torch.Tensor:
    # Temperature scaling of a Bayesian predictive acts on its log predictive probabilities
    # (the averaged model), the usual choice for ensembles and MC averages.
    return pred.mean_probs.clamp_min(1e-300).log()


def run(settings: Mapping[str, Mapping], n_train: int, n_val: int, n_test: int, seed: int,
        methods: list[str]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Metrics per method before/after temperature scaling, and reliability tables."""
    from ..calibration import apply_temperature, fit_temperature, reliability, summary

    x_tr, y_tr = make_data(n_train, seed)
    x_val, y_val = make_data(n_val, seed + 1)
    x_te, y_te = make_data(n_test, seed + 2)
    fits = _methods()
    rows, tables = [], {}
    optimal = bayes_optimal_probs(x_te)
    rows.append({"method": "Bayes-optimal", "temperature": 1.0, **summary(optimal, y_te)})
    for name in methods:
        start = time.perf_counter()
        fit = fits[name](x_tr, y_tr, seed, **settings.get(name, {}))
        val_logits = _log_mean_probs(fit.predict(x_val))
        test_logits = _log_mean_probs(fit.predict(x_te))
        T = fit_temperature(val_logits, y_val)
        before, after = torch.softmax(test_logits, -1), apply_temperature(test_logits, T)
        rows.append({"method": name, "temperature": 1.0, **summary(before, y_te),
                     "time_s": time.perf_counter() - start})
        rows.append({"method": f"{name} + T", "temperature": T, **summary(after, y_te)})
        tables[name] = reliability(before, y_te)
        tables[f"{name} + T"] = reliability(after, y_te)
    return pd.DataFrame(rows), tables


def write_report(table: pd.DataFrame, tables: Mapping[str, pd.DataFrame], dest: Path,
                 command: str, sizes: Mapping[str, int]) -> Path:
    from ..calibration import reliability_diagram
    from ..inference import versions

    worse = [r.method for r in table.itertuples()
             if r.method.endswith("+ T") and r.nll > table.loc[table.method == r.method[:-4], "nll"].iloc[0]]
    lines = ["# calibration_classification", "", __doc__.split("\n\n", 1)[1].strip(), "",
             f"- command: `{command}`",
             "- sizes: " + ", ".join(f"{k} {v}" for k, v in sizes.items()),
             "- versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()), "",
             "## Test metrics before and after temperature scaling", "",
             "`+ T` rows use the temperature fitted on the validation split; Bayes-optimal is the "
             "exact answer for this data.", "", md_table(table.fillna("")), ""]
    if worse:
        lines += [f"Temperature scaling raised the test NLL for: {', '.join(worse)} (the "
                  "validation split is small, so T is itself uncertain).", ""]
    lines += ["## Reliability diagrams", "", "![reliability](figures/reliability.png)", ""]
    with atomic_directory(dest) as tmp:
        table.to_csv(tmp / "metrics.csv", index=False, lineterminator="\n")
        (tmp / "figures").mkdir()
        reliability_diagram(dict(tables), tmp / "figures" / "reliability.png")
        (tmp / "report.md").write_text("\n".join(lines))
    return Path(dest)

